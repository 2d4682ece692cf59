"""``emit digraph``, ``emit_digraph`` and the DOT text behind them.

What Graphviz makes of the text is checked by Graphviz itself: the DOT is
laid out by the real ``dot`` program into JSON, and the node names it shows
and the edges it draws are compared with the graph's own names and routes.
Tests that need ``dot`` fail, never skip, when it is missing.
"""

import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest
from typer.testing import CliRunner

from emitcli import Router
from emitcli.cli import app, legacy_app
from emitcli.digraph import RankDir, RenderError, to_dot
from emitcli.loader import load_router
from emitcli.messages import ENTRY_POINT

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AWKWARD = "tests.graphs.dot_graphs:awkward"
EXAMPLES = [
    "examples.simple.graph:router",
    "examples.regex.graph:router",
    "examples.rq.graph:router",
    "examples.multilang.graph:router",
    "examples.celery.tasks:router",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIMEOUT = 60


@pytest.fixture(autouse=True)
def from_repository_root(monkeypatch):
    """Run where a user would, the repository root, and leave sys.path as found."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def dot():
    """The Graphviz ``dot`` program; without it the test fails and says what to install."""
    path = shutil.which("dot")
    if path is None:
        pytest.fail("the Graphviz 'dot' program is needed: apt-get install graphviz", False)
    return path


def emit(*args, app_=app):
    return CliRunner().invoke(app_, list(args), env={"COLUMNS": "200"})


def run(*command, env=None, stdin=None):
    return subprocess.run(
        command, input=stdin, capture_output=True, cwd=ROOT, env=env, timeout=TIMEOUT
    )


def routes_of(router):
    """Every (origin, destination) of a graph, asked of the router itself."""
    origins = [ENTRY_POINT, *router.nodes]
    return {(origin, dest) for origin in origins for dest in router.subscribers(origin)}


def laid_out(dot, text):
    """What Graphviz draws from DOT text: the graph, node labels as shown, edges by label."""
    result = run(dot, "-Tjson", stdin=text.encode())
    assert result.returncode == 0, result.stderr.decode()
    graph = json.loads(result.stdout)
    shown = {
        obj["_gvid"]: "\n".join(op["text"] for op in obj["_ldraw_"] if op["op"] == "T")
        for obj in graph.get("objects", [])
    }
    edges = {(shown[edge["tail"]], shown[edge["head"]]) for edge in graph.get("edges", [])}
    return graph, set(shown.values()), edges


def chain(order):
    """A graph a -> b -> c fed from the entry and a loner d, registered in ``order``."""
    router = Router()
    declared = {
        "a": {"entry_point": True},
        "b": {"subscribe_to": "a"},
        "c": {"subscribe_to": "b"},
        "d": {},
    }
    for name in order:
        router.register(name, lambda msg: msg.text, ("text",), **declared[name])
    return router


def statements(text):
    """The lines between ``digraph NAME {`` and ``}``."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith(" {")
    assert lines[-1] == "}"
    return lines[1:-1]


# The DOT text ----------------------------------------------------------------


def test_each_route_is_one_quoted_line_in_sorted_order():
    router = load_router(EXAMPLES[1])
    text = to_dot(router)

    assert text.splitlines()[0] == "digraph router {"
    expected = [f'"{origin}" -> "{dest}";' for origin, dest in sorted(routes_of(router))]
    assert statements(text) == expected


def test_the_text_does_not_depend_on_the_order_nodes_were_registered_in():
    assert to_dot(chain("abcd")) == to_dot(chain("dcba")) == to_dot(chain("cadb"))


def test_entry_points_are_fed_from_entry_point():
    router = load_router(EXAMPLES[0])
    lines = statements(to_dot(router))

    fed = [line for line in lines if line.startswith(f'"{ENTRY_POINT}" -> ')]
    assert fed == [f'"{ENTRY_POINT}" -> "{name}";' for name in router.entry_points]


def test_a_node_that_subscribes_to_everything_is_fed_from_entry_point_too():
    router = load_router(EXAMPLES[1])
    notify = "examples.regex.graph.notify_on_emit"

    assert notify in router.nodes and notify not in router.entry_points
    assert f'"{ENTRY_POINT}" -> "{notify}";' in statements(to_dot(router))


def test_a_node_without_routes_is_drawn_alone_and_only_that_node(dot):
    router = chain("abcd")
    text = to_dot(router)

    assert [line for line in statements(text) if "->" not in line] == ['"d";']
    _, shown, edges = laid_out(dot, text)
    assert shown == {ENTRY_POINT, *router.nodes}
    assert edges == routes_of(router)


def test_a_cycle_is_drawn_with_every_route_of_it(dot):
    router = load_router("tests.graphs.cli_graphs:cycle")
    ping, pong = router.nodes

    _, _, edges = laid_out(dot, to_dot(router))
    assert {(ping, pong), (pong, ping)} <= edges
    assert edges == routes_of(router)


def test_dot_keywords_quotes_backslashes_colons_and_line_breaks_come_back_as_named(dot):
    router = load_router(AWKWARD)
    assert {"node", "graph", "edge"} <= set(router.nodes)
    assert any('"' in name and ":" in name for name in router.nodes)
    assert any(name.endswith("\\") for name in router.nodes)

    text = to_dot(router)
    _, shown, edges = laid_out(dot, text)

    assert shown == {ENTRY_POINT, *router.nodes}
    assert edges == routes_of(router)
    assert len(statements(text)) == len(routes_of(router)) + 2  # the two loners


@pytest.mark.parametrize("name", ["router", "my graph", "graph", 'say "hi"', "C:\\"])
def test_the_graph_name_is_the_one_graphviz_reads(dot, name):
    graph, _, _ = laid_out(dot, to_dot(chain("abcd"), name=name))
    # Graphviz keeps a name's backslashes as written, as it does for node names.
    assert graph["name"] == name.replace("\\", "\\\\")


@pytest.mark.parametrize("rankdir", [*RankDir, "lr"])
def test_rankdir_reaches_graphviz(dot, rankdir):
    graph, _, _ = laid_out(dot, to_dot(chain("abcd"), rankdir=rankdir))
    assert graph["rankdir"] == rankdir.upper()


def test_an_unknown_rankdir_is_refused_with_the_known_ones():
    with pytest.raises(RenderError, match="TB, LR, BT, RL"):
        to_dot(chain("abcd"), rankdir="sideways")


# emit digraph and emit_digraph ------------------------------------------------


@pytest.mark.parametrize("locator", [*EXAMPLES, AWKWARD])
def test_emit_digraph_piped_into_dot_makes_an_svg(dot, locator):
    pipeline = f"{shlex.quote(str(BIN / 'emit'))} digraph {locator} | {shlex.quote(dot)} -Tsvg"
    result = run("bash", "-o", "pipefail", "-c", pipeline)

    assert result.returncode == 0, result.stderr.decode()
    assert b"<svg" in result.stdout
    assert result.stderr == b""


@pytest.mark.parametrize("locator", [*EXAMPLES, AWKWARD])
def test_emit_digraph_prints_the_dot_text_of_the_graph(locator):
    result = emit("digraph", locator)

    assert result.exit_code == 0, result.output
    assert result.stdout == to_dot(load_router(locator))


def test_name_and_rankdir_options_shape_the_text():
    result = emit("digraph", EXAMPLES[0], "--name", "words", "--rankdir", "LR")

    expected = to_dot(load_router(EXAMPLES[0]), name="words", rankdir="LR")
    assert result.stdout == expected
    assert expected.splitlines()[:2] == ["digraph words {", "rankdir=LR;"]


def test_output_png_is_a_picture_of_the_graph(dot, tmp_path):
    target = tmp_path / "graph.png"
    result = emit("digraph", AWKWARD, "-o", str(target))

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    # The same size as dot's own picture of the graph, and far from empty.
    direct = run(dot, "-Tpng", stdin=to_dot(load_router(AWKWARD)).encode()).stdout
    assert png_size(data) == png_size(direct)
    assert min(png_size(data)) > 200


def png_size(data):
    """Width and height from a PNG's header chunk."""
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    ("filename", "options", "start"),
    [
        ("graph.svg", [], b"<?xml"),
        ("graph.pdf", [], b"%PDF"),
        ("graph.PNG", [], PNG_SIGNATURE),
        ("graph.png", ["--format", "svg"], b"<?xml"),
        ("graph.out", ["-T", "pdf"], b"%PDF"),
    ],
)
def test_the_suffix_names_the_format_unless_format_is_given(
    dot, tmp_path, filename, options, start
):
    target = tmp_path / filename
    result = emit("digraph", EXAMPLES[0], "-o", str(target), *options)

    assert result.exit_code == 0, result.output
    assert target.read_bytes().startswith(start)


@pytest.mark.parametrize("filename", ["graph.dot", "graph.gv"])
def test_a_dot_or_gv_file_gets_the_text_without_graphviz(tmp_path, filename):
    target = tmp_path / filename
    result = run(BIN / "emit", "digraph", EXAMPLES[1], "-o", target, env=without_dot(tmp_path))

    assert result.returncode == 0, result.stderr.decode()
    assert target.read_text() == to_dot(load_router(EXAMPLES[1]))


def test_format_without_output_writes_the_drawing_to_stdout(dot):
    result = emit("digraph", EXAMPLES[0], "--format", "svg")

    assert result.exit_code == 0, result.output
    assert "<svg" in result.stdout
    assert "examples.simple.graph.count_word" in result.stdout


def without_dot(tmp_path):
    """An environment whose PATH finds no ``dot``, only an empty directory."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(empty)}


def test_without_dot_drawing_fails_in_one_line_saying_what_to_install(tmp_path):
    target = tmp_path / "graph.png"
    command = [BIN / "emit", "digraph", EXAMPLES[0], "-o", target]
    result = run(*command, env=without_dot(tmp_path))

    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "'dot'" in lines[0] and "apt-get install graphviz" in lines[0]
    assert not target.exists()


def test_without_dot_the_text_is_printed_all_the_same(tmp_path):
    result = run(BIN / "emit", "digraph", EXAMPLES[0], env=without_dot(tmp_path))

    assert result.returncode == 0
    assert result.stdout.decode() == to_dot(load_router(EXAMPLES[0]))


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["-o", "{tmp}/graph"], "give --format"),
        (["--format", "jpgg"], "no format 'jpgg'"),
        (["--rankdir", "up"], "'up' is not one of"),
        (["-o", "{tmp}/no/such/folder/graph.dot"], "cannot write"),
    ],
)
def test_a_drawing_that_cannot_be_made_is_a_usage_error(tmp_path, options, words):
    result = emit("digraph", EXAMPLES[0], *(opt.format(tmp=tmp_path) for opt in options))

    assert result.exit_code == 2
    assert words in result.stderr
    assert result.stdout == ""


def test_a_format_graphviz_knows_but_this_dot_cannot_draw_is_one_line_from_dot(dot):
    # ``dot -T?`` lists what this build draws; the graphviz package knows more
    # (cgimage is macOS only), and dot refuses those itself.
    listing = run(dot, "-T?").stderr.decode()
    drawable = set(listing.rpartition("Use one of:")[2].split())
    missing = sorted(set(graphviz.FORMATS) - drawable)
    if not missing:
        pytest.skip("this dot draws every format the graphviz package knows")

    result = emit("digraph", EXAMPLES[0], "--format", missing[0])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"dot -T{missing[0]} failed" in lines[0], lines


def test_a_locator_that_does_not_load_is_a_usage_error():
    result = emit("digraph", "tests.graphs.cli_graphs:not_a_router")

    assert result.exit_code == 2
    assert "not an emitcli Router" in result.stderr


def test_a_reader_that_goes_away_ends_it_quietly():
    proc = subprocess.Popen(
        [BIN / "emit", "digraph", AWKWARD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before emit has written anything: its write meets a closed pipe

    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert stderr == b""


@pytest.mark.parametrize(
    "locator", ["examples.simple.graph:router", "examples.simple.graph.router"]
)
def test_emit_digraph_the_2013_command_prints_the_same_text(locator):
    legacy = run(BIN / "emit_digraph", locator)

    assert legacy.returncode == 0, legacy.stderr.decode()
    assert legacy.stdout == run(BIN / "emit", "digraph", EXAMPLES[0]).stdout
    assert legacy.stdout.decode() == to_dot(load_router(EXAMPLES[0]))


def test_emit_digraph_takes_the_options_of_emit_digraph():
    result = emit(AWKWARD, "--rankdir", "RL", "--name", "g", app_=legacy_app)

    assert result.exit_code == 0, result.output
    assert result.stdout == to_dot(load_router(AWKWARD), name="g", rankdir="RL")
