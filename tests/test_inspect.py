"""``emit inspect``: the graph described, its problems flagged, as a page or as JSON.

Each problem is checked on a graph in ``tests/graphs/inspect_graphs.py`` built
to hold it, and checked absent from a clean graph and from the examples.  The
JSON is compared with what the router itself says (its nodes, its
subscribers), and its bytes with those of other runs under other hash seeds.
"""

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emitcli import Router
from emitcli.cli import app
from emitcli.inspection import PROBLEM_KINDS, SCHEMA_VERSION, describe
from emitcli.loader import load_router
from emitcli.messages import ENTRY_POINT
from emitcli.worker import URL_VARIABLES
from tests.graphs import inspect_graphs

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).parent / "emit")
GRAPHS = "tests.graphs.inspect_graphs"
EXAMPLES = [
    "examples.simple.graph:router",
    "examples.regex.graph:router",
    "examples.rq.graph:router",
    "examples.multilang.graph:router",
    "examples.celery.tasks:router",
]
TOP_KEYS = ["emit_inspect", "router", "max_hops", "entry_points", "nodes", "routes", "problems"]
NODE_KEYS = ["name", "fields", "subscribe_to", "ignore", "entry_point", "options"]
PROBLEM_KEYS = ["kind", "nodes", "pattern", "text"]
TIMEOUT = 60

# What each graph is built to hold: (kind, nodes, pattern) of every problem, in order.
EXPECTED = {
    "clean": [],
    "catch_all_entry": [],
    "rq_options": [],
    "typo": [("unmatched_subscription", ["app.clean"], "raed")],
    "own_tail": [("unmatched_subscription", ["app.clean"], "clean")],
    "stale_ignore": [("unmatched_ignore", ["app.clean"], "raed")],
    "stranded": [
        ("unreachable", ["app.orphan"], None),
        ("unreachable", ["app.after_orphan"], None),
    ],
    "loop": [("cycle", ["app.ping", "app.pong"], None)],
    "two_loops": [
        ("cycle", ["app.tick", "app.tock"], None),
        ("cycle", ["app.left", "app.right"], None),
    ],
    "tangle": [("cycle", ["app.a", "app.b"], None)],
    "twins": [("same_short_name", ["app.csv.parse", "app.json.parse"], None)],
    "no_entry": [("no_entry_point", [], None)],
}


@pytest.fixture(autouse=True)
def from_repository_root(monkeypatch):
    """Run where a user would, the repository root, and leave sys.path as found.

    Without a Redis URL in the environment, which would add the live section.
    """
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for variable in URL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def emit(*args, env=None):
    return CliRunner().invoke(app, ["inspect", *args], env={"COLUMNS": "200", **(env or {})})


def run(*args, env=None):
    return subprocess.run(
        [EMIT, "inspect", *args], capture_output=True, cwd=ROOT, env=env, timeout=TIMEOUT
    )


def flagged(report):
    return [(p["kind"], p["nodes"], p["pattern"]) for p in report["problems"]]


def chain(length, closed=False):
    """Nodes n0 -> n1 -> ... in a line; closed, the last sends back to the first."""
    router = Router()
    for i in range(length):
        subscribe = f"n{i - 1}" if i else (f"n{length - 1}" if closed else None)
        router.register(f"app.n{i}", inspect_graphs.relay, ("text",), subscribe, i == 0)
    return router


# Problems --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_graph_is_flagged_with_exactly_the_problems_it_was_built_with(name):
    report = describe(getattr(inspect_graphs, name))

    assert flagged(report) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_command_flags_the_same_problems_and_exits_1_for_any(name):
    result = emit(f"{GRAPHS}:{name}", "--json")

    assert flagged(json.loads(result.stdout)) == EXPECTED[name]
    assert result.exit_code == (1 if EXPECTED[name] else 0)


def test_every_kind_of_problem_is_covered_by_a_graph_here():
    kinds = {kind for problems in EXPECTED.values() for kind, _, _ in problems}

    assert kinds == set(PROBLEM_KINDS)


def test_a_problem_text_names_its_nodes_and_its_pattern():
    for name in EXPECTED:
        for problem in describe(getattr(inspect_graphs, name))["problems"]:
            assert all(node in problem["text"] for node in problem["nodes"]), problem
            assert problem["pattern"] is None or repr(problem["pattern"]) in problem["text"]


def test_a_pattern_matching_only_its_own_node_says_so():
    (problem,) = describe(inspect_graphs.own_tail)["problems"]

    assert "only the node itself" in problem["text"]


def test_a_node_fed_only_by_an_unreachable_node_names_that_sender():
    problems = describe(inspect_graphs.stranded)["problems"]

    assert "(app.orphan)" in problems[1]["text"]
    assert "no route leads to it" in problems[0]["text"]


def test_a_cycle_is_shown_as_a_closed_path_with_the_hop_limit():
    (problem,) = describe(inspect_graphs.loop)["problems"]

    assert problem["text"].startswith("app.ping -> app.pong -> app.ping;")
    assert "100 hops" in problem["text"]
    assert "more loops" not in problem["text"]


def test_a_tangle_of_loops_is_reported_once_naming_its_other_members():
    (problem,) = describe(inspect_graphs.tangle)["problems"]

    assert "more loops run through these nodes and app.c" in problem["text"]


def test_a_ring_is_one_cycle_through_every_node_in_order():
    router = chain(4, closed=True)

    (problem,) = describe(router)["problems"]

    assert problem["nodes"] == list(router.nodes)
    assert "more loops" not in problem["text"]


def test_a_long_chain_and_a_long_ring_are_inspected_without_recursion():
    length = 5 * sys.getrecursionlimit()

    assert describe(chain(length))["problems"] == []
    (problem,) = describe(chain(length, closed=True))["problems"]
    assert len(problem["nodes"]) == length


def test_a_catch_all_subscriber_counts_as_receiving_the_input():
    report = describe(inspect_graphs.catch_all_entry)

    assert report["entry_points"] == []
    assert report["routes"][ENTRY_POINT] == ["app.listen"]
    assert report["problems"] == []


def test_an_empty_router_has_no_entry_point_and_nothing_else_wrong():
    assert flagged(describe(Router())) == [("no_entry_point", [], None)]


# The JSON document -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_json_keys_come_in_the_documented_order(name):
    report = json.loads(emit(f"{GRAPHS}:{name}", "--json").stdout)

    assert list(report) == TOP_KEYS
    assert report["emit_inspect"] == SCHEMA_VERSION
    assert all(list(node) == NODE_KEYS for node in report["nodes"])
    assert all(list(problem) == PROBLEM_KEYS for problem in report["problems"])


@pytest.mark.parametrize("name", ["clean", "tangle", "rq_options"])
def test_the_json_describes_each_node_as_the_router_registered_it(name):
    router = getattr(inspect_graphs, name)

    report = json.loads(emit(f"{GRAPHS}:{name}", "--json").stdout)

    assert [node["name"] for node in report["nodes"]] == list(router.nodes)
    for node in report["nodes"]:
        spec = router.nodes[node["name"]]
        assert node["fields"] == list(spec.fields)
        assert node["subscribe_to"] == [p.text for p in spec.subscribe_to]
        assert node["ignore"] == [p.text for p in spec.ignore]
        assert node["entry_point"] is spec.entry_point
        assert sorted(node["options"]) == list(node["options"]) == sorted(spec.options)
    assert report["entry_points"] == router.entry_points
    assert report["max_hops"] == router.max_hops
    assert report["router"] == f"{type(router).__module__}.{type(router).__name__}"


@pytest.mark.parametrize("locator", [f"{GRAPHS}:clean", f"{GRAPHS}:tangle", *EXAMPLES])
def test_the_json_routes_are_the_routers_own_in_dispatch_order(locator):
    router = load_router(locator)

    report = json.loads(emit(locator, "--json").stdout)

    origins = [ENTRY_POINT, *router.nodes]
    assert report["routes"] == {origin: list(router.subscribers(origin)) for origin in origins}
    assert list(report["routes"]) == origins


def test_options_are_json_with_no_password_and_no_memory_address():
    result = emit(f"{GRAPHS}:rq_options", "--json")

    nodes = {node["name"]: node["options"] for node in json.loads(result.stdout)["nodes"]}
    assert nodes["app.read"] == {"queue": "high", "timeout": 30}
    assert nodes["app.clean"] == {"batch_size": 10, "retry": [3, [1, 5]]}
    assert nodes["app.store"]["connection"] == "redis://localhost:6390/2"
    assert nodes["app.store"]["retry"].startswith("Retry(max=2")
    assert "s3cret" not in result.stdout
    assert "0x" not in result.stdout


def test_a_celery_nodes_own_task_is_shown_by_the_node_it_runs():
    report = json.loads(emit("examples.celery.tasks:router", "--json").stdout)

    options = {node["name"]: node["options"] for node in report["nodes"]}
    task = options["examples.celery.tasks.tally_word"]["celery_task"]
    assert task.startswith("<@task: examples.celery.tasks.tally_word")
    assert "0x" not in task


def test_the_json_is_byte_identical_across_runs_and_hash_seeds():
    locator = f"{GRAPHS}:rq_options"
    outputs = [
        run(locator, "--json", env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("0", "1", "4242")
    ]

    assert outputs[0] == outputs[1] == outputs[2]
    assert json.loads(outputs[0])["nodes"]


def test_every_problem_kind_is_byte_identical_across_hash_seeds():
    locators = ",".join(f"{GRAPHS}:{name}" for name in sorted(EXPECTED))
    script = (
        "import json, sys\n"
        "from emitcli.inspection import describe\n"
        "from emitcli.loader import load_router\n"
        "for locator in sys.argv[1].split(','):\n"
        "    print(json.dumps(describe(load_router(locator))))\n"
    )

    def dump(seed):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, "-c", script, locators]
        done = subprocess.run(command, capture_output=True, cwd=ROOT, env=env, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    assert dump("0") == dump("977")


# Exit codes and the examples -------------------------------------------------


@pytest.mark.parametrize("locator", EXAMPLES)
def test_the_examples_inspect_cleanly_in_both_forms(locator):
    page = emit(locator)
    document = emit(locator, "--json")

    assert page.exit_code == 0, page.output
    assert "no problems found" in page.stdout
    assert document.exit_code == 0
    assert json.loads(document.stdout)["problems"] == []


def test_the_regex_examples_catch_all_notifier_is_reached_and_not_flagged():
    report = json.loads(emit("examples.regex.graph:router", "--json").stdout)

    notifier = "examples.regex.graph.notify_on_emit"
    assert notifier in report["routes"][ENTRY_POINT]
    assert all(notifier in report["routes"][n["name"]] for n in report["nodes"][:-1])
    assert report["problems"] == []


def test_a_graph_that_cannot_be_loaded_exits_2_with_the_reason_on_stderr():
    missing = run("tests.graphs.no_such_module:router")
    not_a_router = run(f"{GRAPHS}:relay")

    assert missing.returncode == not_a_router.returncode == 2
    assert missing.stdout == not_a_router.stdout == b""
    assert b"no module named 'tests.graphs.no_such_module'" in missing.stderr
    assert b"not an emitcli Router" in not_a_router.stderr


def test_problems_exit_1_and_a_clean_graph_0_as_a_real_process():
    assert run(f"{GRAPHS}:loop").returncode == 1
    assert run(f"{GRAPHS}:loop", "--json").returncode == 1
    assert run(f"{GRAPHS}:clean").returncode == 0


# The page for people ---------------------------------------------------------


def test_the_page_shows_each_node_with_its_facts_and_where_it_sends():
    page = emit(f"{GRAPHS}:rq_options").stdout

    assert page.startswith("emitcli.router.rq.RQRouter: 3 nodes, a message passes at most 7 hops")
    assert "app.read entry point" in page
    assert "options: queue=high, timeout=30" in page
    assert "subscribes to: clean" in page
    assert "s3cret" not in page
    # The node's own branch: from its label to the next label at the top level.
    clean = re.split(r"\n[├└]── ", page.split("\n├── app.clean\n")[1])[0]
    assert clean.splitlines()[-2:] == ["│   └── sends to", "│       └── app.store"]


def test_the_page_marks_problem_nodes_and_lists_the_problems():
    page = emit(f"{GRAPHS}:stranded").stdout

    assert "app.orphan ! unreachable" in page
    assert "app.read !" not in page
    assert "2 problems\n- unreachable: node app.orphan never gets a message" in page
    assert "no problems found" not in page


def test_the_page_shows_names_as_they_are_not_as_markup():
    page = emit("tests.graphs.dot_graphs:awkward").stdout

    assert "tests.graphs.dot_graphs.port:compass:n" in page
    assert 'say "hi": to \\"everyone\\"' in page


def test_the_page_is_plain_text_when_stdout_is_not_a_terminal():
    result = run(f"{GRAPHS}:loop")

    assert b"\x1b[" not in result.stdout
    assert b"- cycle: app.ping -> app.pong -> app.ping" in result.stdout


def on_a_terminal(*args, env):
    """Run ``emit inspect`` with stdout on a pseudo-terminal; return what it wrote there."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [EMIT, "inspect", *args], stdout=follower, stderr=subprocess.PIPE, cwd=ROOT, env=env
    ) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=TIMEOUT)
    os.close(leader)
    return b"".join(chunks)


def test_problems_are_coloured_on_a_terminal_unless_no_color_is_set():
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"

    coloured = on_a_terminal(f"{GRAPHS}:loop", env=env)
    plain = on_a_terminal(f"{GRAPHS}:loop", env={**env, "NO_COLOR": "1"})

    assert b"\x1b[" in coloured
    assert b"cycle" in plain
    assert b"\x1b[" not in plain
