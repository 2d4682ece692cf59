"""Edges a new user met: closed streams, odd input files, names that clash, sys.exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).with_name("emit"))
WORDS = ["examples.simple.graph:router", "--field", "document"]

GRAPH = """\
import sys
from emitcli import Router

router = Router()


@router.node("n", entry_point=True)
def measure(msg):
    if msg.line == "exit":
        sys.exit(3)
    return len(msg.line)
"""


def emit(*args: str, stdin: str = "", **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EMIT, "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=kwargs.pop("cwd", ROOT),
        timeout=60,
        **kwargs,
    )


def test_a_run_with_stderr_closed_still_writes_its_output():
    result = subprocess.run(
        f"printf 'a b\\n' | {EMIT} run {' '.join(WORDS)} 2>&-",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0
    assert [json.loads(line)["word"] for line in result.stdout.splitlines()] == ["a", "b"]


def test_a_device_is_read_as_an_input_file_and_a_directory_is_refused(tmp_path):
    assert emit(*WORDS, "/dev/null").returncode == 0
    refused = emit(*WORDS, str(tmp_path))
    assert refused.returncode == 2
    assert "is a directory" in refused.stderr


def test_a_graph_file_named_like_a_python_module_is_refused(tmp_path):
    (tmp_path / "logging.py").write_text(GRAPH)
    result = emit(f"{tmp_path / 'logging.py'}:router", stdin="a\n")
    assert result.returncode == 2
    assert "rename the file" in result.stderr


def test_an_unwritable_dead_letter_file_is_one_line_and_exit_2(tmp_path):
    result = emit(*WORDS, "--dead-letter", str(tmp_path / "no" / "such.jsonl"), stdin="a\n")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "dead-letter" in result.stderr


def test_field_with_json_input_is_refused():
    result = emit("examples.simple.graph:router", "--json", "--field", "document", stdin="{}\n")
    assert result.returncode == 2
    assert "--json" in result.stderr


def test_a_node_calling_sys_exit_stops_the_run_with_a_line_and_a_dead_letter(tmp_path):
    (tmp_path / "exiting.py").write_text(GRAPH)
    letters = tmp_path / "dead.jsonl"
    result = emit(
        "exiting:router", "--dead-letter", str(letters), stdin="ab\nexit\ncd\n", cwd=tmp_path
    )
    assert result.returncode == 1
    assert [json.loads(line)["n"] for line in result.stdout.splitlines()] == [2]
    assert "sys.exit(3) at <stdin>:2" in result.stderr
    record = json.loads(letters.read_text())
    assert (record["line"], record["error"]["type"]) == (2, "RunStopped")


def test_a_graph_error_at_import_names_the_users_file(tmp_path):
    (tmp_path / "badfields.py").write_text(
        "from emitcli import Router\nrouter = Router()\n\n\n"
        "@router.node(('no good',), entry_point=True)\ndef f(msg):\n    return 1\n"
    )
    result = emit("badfields:router", cwd=tmp_path)
    assert result.returncode == 2
    assert "badfields.py, line 5" in result.stderr


def test_a_path_locator_inside_a_package_keeps_its_relative_imports(tmp_path):
    package = tmp_path / "proj" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "util.py").write_text("def low(s):\n    return s.lower()\n")
    (package / "flow.py").write_text(
        "from emitcli import Router\nfrom .util import low\n\nrouter = Router()\n\n\n"
        "@router.node('w', entry_point=True)\ndef f(msg):\n    return low(msg.line)\n"
    )
    direct = emit(f"{package / 'flow.py'}:router", stdin="HI\n", cwd=tmp_path)
    by_app_dir = emit(
        "pkg/flow.py:router", "--app-dir", str(tmp_path / "proj"), stdin="HI\n", cwd=tmp_path
    )
    for result in (direct, by_app_dir):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"w": "hi", "@node": "pkg.flow.f"}


def test_a_file_the_run_writes_is_refused_when_it_is_also_read(tmp_path):
    letters = tmp_path / "dead.jsonl"
    letters.write_text('{"kind": "dead-letter", "node": null, "input": {"document": "a"}}\n')
    before = letters.read_bytes()
    replay = [EMIT, "replay", str(letters), WORDS[0], "--dead-letter", str(letters)]
    with letters.open("rb") as stdin:
        from_stdin = subprocess.run(
            [EMIT, "run", *WORDS, "--dead-letter", str(letters)],
            stdin=stdin,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )
    runs = {
        "replay into its own file": subprocess.run(
            replay, capture_output=True, cwd=ROOT, timeout=60
        ),
        "a record over its input": emit(*WORDS, str(letters), "--record", str(letters)),
        "stdin read from the file": from_stdin,
    }
    for case, result in runs.items():
        assert result.returncode == 2, case
        assert "also read as input" in str(result.stderr), case
        assert result.stdout in ("", b""), case
    assert letters.read_bytes() == before


def test_the_record_and_the_dead_letters_cannot_share_a_file(tmp_path):
    shared = tmp_path / "out.jsonl"
    result = emit(*WORDS, "--record", str(shared), "--dead-letter", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert "--dead-letter and --record name one file" in result.stderr
    assert not shared.exists()


def test_what_a_graph_module_prints_as_it_loads_goes_to_stderr(tmp_path):
    (tmp_path / "noisy.py").write_text('print("loading the graph")\n' + GRAPH)
    ran = emit("noisy:router", stdin="ab\n", cwd=tmp_path)
    inspected = subprocess.run(
        [EMIT, "inspect", "noisy:router", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert ran.returncode == inspected.returncode == 0
    assert json.loads(ran.stdout) == {"n": 2, "@node": "noisy.measure"}
    assert json.loads(inspected.stdout)["router"]
    assert "loading the graph" in ran.stderr and "loading the graph" in inspected.stderr


def test_an_output_file_that_is_the_input_pipe_is_refused():
    for option in ("--record", "--dead-letter"):
        result = subprocess.run(
            f"printf 'a b\\n' | {EMIT} run {' '.join(WORDS)} {option} /dev/stdin",
            shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, option
        assert f"{option} '/dev/stdin' is also read as input (stdin)" in result.stderr
