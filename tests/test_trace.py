"""Trace events, ``emit run --trace`` and ``--record``, and the testing helpers."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from emitcli.cli import app
from emitcli.console import TREE_HOPS, TraceView
from emitcli.testing import run_graph
from emitcli.trace import HopEvent, Tally
from tests.graphs import trace_graphs

ROOT = Path(__file__).resolve().parents[1]
WORDS = "tests.graphs.trace_graphs:words"
ENV = {"COLUMNS": "120", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}


def name(node):
    return f"tests.graphs.trace_graphs.{node}"


@pytest.fixture(autouse=True)
def from_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("EMIT_TEST_BAD_WORD", raising=False)


def emit(*args, stdin=""):
    return CliRunner().invoke(app, list(args), input=stdin, env=ENV)


# Events --------------------------------------------------------------------


def test_every_hop_is_one_event_linked_to_the_hop_that_sent_its_message():
    result = run_graph(trace_graphs.words, ["ab bad c"])
    by_hop = {event.hop: event for event in result.events}
    assert len(by_hop) == len(result.events) == 1 + 3 + 2
    (root,) = [e for e in result.events if e.parent is None]
    assert (root.origin, root.node, root.hops, root.fields) == (
        "__entry_point", name("split"), 0, {"line": "ab bad c"})  # fmt: skip
    assert (root.outcome, root.sent) == ("ok", 3)
    for event in result.events:
        if event is not root:
            parent = by_hop[event.parent]
            assert event.origin == parent.node
            assert event.hops == parent.hops + 1
            assert event.run == root.run
    counted = sorted((e.fields["word"], e.outcome, e.sent) for e in result.hops("count"))
    assert counted == [("ab", "ok", 1), ("bad", "error", 0), ("c", "ok", 1)]
    shouts = {e.fields["word"]: e.outcome for e in result.hops("shout")}
    assert shouts == {"ab": "ok", "c": "no result"}


def test_a_failed_hop_carries_the_error_type_and_text():
    result = run_graph(trace_graphs.words, ["bad"])
    (failed,) = [e for e in result.events if e.outcome == "error"]
    assert (failed.node, failed.error_type) == (name("count"), "ValueError")
    assert failed.error_text == "cannot count 'bad'"
    assert failed.as_record()["error"] == {"type": "ValueError", "text": "cannot count 'bad'"}
    assert [f.node for f in result.failures] == [name("count")]


def test_an_event_keeps_the_fields_as_the_node_got_them():
    result = run_graph(trace_graphs.mutating, [{"items": [1]}], outputs=["grow"])
    (event,) = result.events
    assert event.fields == {"items": [1]}
    assert result.fields("grow") == [{"items": [1, "added"]}]


def test_a_message_dropped_at_the_hop_limit_is_an_error_event():
    result = run_graph(trace_graphs.loop, [{"n": 0}])
    errors = [e for e in result.events if e.outcome == "error"]
    assert [e.error_type for e in errors] == ["HopLimitError"]
    assert errors[0].hops == 3
    assert len(result.events) == 4


def test_tracing_changes_nothing_the_graph_sends(tmp_path):
    text = "the bad rain in a plain\nbad\n\nx yy zzz\n"
    plain = emit("run", WORDS, stdin=text)
    traced = emit("run", WORDS, "--trace", "--record", str(tmp_path / "r.jsonl"), stdin=text)
    assert traced.exit_code == plain.exit_code == 1
    assert traced.stdout == plain.stdout
    assert len(plain.stdout.splitlines()) == 6


def test_durations_are_measured_and_ordered_by_quantile():
    tally = Tally()
    for duration in [0.5, 0.1, 0.3, 0.2, 0.4]:
        tally.add("n", "ok", 1, duration)
    (node,) = tally
    assert (node.hops, node.sent, node.longest) == (5, 5, 0.5)
    assert node.quantile(0.5) == 0.3
    assert node.quantile(0.95) == 0.5
    assert node.mean == pytest.approx(0.3)


def test_a_sampled_tally_keeps_memory_bounded_and_counts_exact():
    tally = Tally(sample=100)
    for i in range(10_000):
        tally.add("n", "error" if i % 10 == 0 else "ok", 1, i / 10_000)
    (node,) = tally
    assert (node.hops, node.errors, len(node.durations)) == (10_000, 1_000, 100)
    assert node.longest == 0.9999
    assert 0.7 < node.quantile(0.95) <= 0.9999


# --record ------------------------------------------------------------------


def test_record_writes_a_run_line_then_every_hop_with_its_input_line(tmp_path):
    path = tmp_path / "rec.jsonl"
    result = emit("run", WORDS, "--record", str(path), stdin="a bb\nbad\n")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    head, hops = lines[0], lines[1:]
    assert head["kind"] == "run" and head["graph"] == WORDS and head["backend"] == "local"
    assert {hop["kind"] for hop in hops} == {"hop"}
    assert {hop["run"] for hop in hops} == {head["run"]}
    assert len(hops) == 1 + 2 + 2 + 1 + 1
    assert {(h["line"], h["source"]) for h in hops if h["node"] == name("split")} == {
        (1, "-"), (2, "-")}  # fmt: skip
    (failed,) = [h for h in hops if h["outcome"] == "error"]
    assert failed["fields"] == {"word": "bad"} and failed["line"] == 2
    assert all(h["duration"] >= 0 and h["start"] > 1.7e9 for h in hops)


def test_record_keeps_input_lines_that_could_not_be_read(tmp_path):
    path = tmp_path / "rec.jsonl"
    result = emit("run", WORDS, "--json", "--record", str(path), stdin='{"line": "a"}\n{nope\n')
    assert result.exit_code == 1
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds.count("bad-input") == 1
    (bad,) = [json.loads(x) for x in path.read_text().splitlines() if '"bad-input"' in x]
    assert bad["line"] == 2 and bad["raw"] == "{nope"


def test_record_to_a_file_that_cannot_be_written_is_a_usage_error(tmp_path):
    result = emit("run", WORDS, "--record", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert result.exit_code == 2
    assert "cannot write the record file" in result.stderr


# --trace -------------------------------------------------------------------


def test_trace_draws_a_tree_per_record_with_the_failure_in_it():
    result = emit("run", WORDS, "--trace", stdin="ab bad\n")
    assert result.exit_code == 1
    text = result.stderr
    assert "<stdin>:1" in text
    assert re.search(r"split .*\{\"line\":\"ab bad\"\}", text)
    assert re.search(r"count \{\"word\":\"bad\"\} \S+s ValueError: cannot count 'bad'", text)
    assert re.search(r"shout \{\"word\":\"ab\",\"length\":2\} \S+s", text)
    assert "\x1b[" not in text


def test_a_long_traced_run_ends_with_a_table_per_node():
    lines = "".join(f"w{i} bad\n" for i in range(30))
    result = emit("run", WORDS, "--trace", stdin=lines)
    text = result.stderr
    assert text.count("<stdin>:") >= 20
    assert "<stdin>:21 " not in text.replace("emit: <stdin>:21", "")
    assert "hops per node" in text
    row = re.search(rf"{re.escape(name('count'))}\s+(\d+)\s+(\d+)\s+(\d+)", text)
    assert row.groups() == ("60", "30", "30")


def test_a_record_that_floods_the_graph_keeps_a_bounded_tree_that_still_shows_its_failure():
    result = emit("run", "tests.graphs.trace_graphs:flood", "--json", "--trace",
                  stdin='{"count": 5000, "bad": 4321}\n')  # fmt: skip
    assert result.exit_code == 1
    text = result.stderr
    assert 'spill {"count":5000,"bad":4321}' in text
    assert re.search(r'drain \{"n":4321,"bad":4321\} \S+ ValueError: cannot drain 4321', text)
    kept = TREE_HOPS + 2  # the hops kept in full, the failed one and the spill that sent it
    assert f"... {5001 - kept:,} more hops not kept" in text

    view = TraceView(Console(file=io.StringIO()))
    for hop in range(1, 50_001):
        view.hop(HopEvent("r", hop, None, "o", "n", 0, {"i": hop}, 0.0))
    assert len(view._hops.events) == TREE_HOPS


def test_trace_in_a_real_pipe_writes_no_colour_codes(tmp_path):
    graph = tmp_path / "g.py"
    graph.write_text(
        "from emitcli import Router\nrouter = Router()\n"
        "@router.node('n', entry_point=True)\ndef one(msg):\n    return len(msg.line)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "emitcli", "run", f"{graph}:router", "--trace"],
        input=b"abc\n", capture_output=True, timeout=60,
        env={**os.environ, "FORCE_COLOR": "", "TERM": "xterm-256color"},
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == b'{"n":3,"@node":"g.one"}\n'
    assert b"g.one" in done.stderr and b"\x1b[" not in done.stderr


def test_trace_into_a_log_file_cuts_no_line_at_80_columns():
    word = "x" * 90
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "emitcli", "run", WORDS, "--trace"],
        input=f"ok {word}\n".encode(), capture_output=True, timeout=60, cwd=ROOT,
        env={**env, "EMIT_TEST_BAD_WORD": word},
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    (tree_line,) = [line for line in lines if "── " in line and "ValueError" in line]
    assert tree_line.endswith(f"ValueError: cannot count '{word}'")
    assert len(tree_line) > 80


def test_a_bad_item_of_a_generator_fails_its_hop_and_the_rest_go_on():
    traced = run_graph(trace_graphs.uneven, [{"x": 1}])
    (event,) = traced.events
    assert (event.outcome, event.sent, event.error_type) == ("error", 2, "ResultError")
    assert traced.fields("pairs") == [{"a": 1, "b": 2}, {"a": 4, "b": 5}]
    plain = emit("run", "tests.graphs.trace_graphs:uneven", "--json", stdin='{"x": 1}\n')
    again = emit("run", "tests.graphs.trace_graphs:uneven", "--json", "--trace", stdin='{"x": 1}\n')
    assert plain.stdout == again.stdout and plain.exit_code == again.exit_code == 1
    assert plain.stderr.count("ResultError") == 0
    assert "returned a tuple of 3 value(s)" in plain.stderr


# emit inspect FILE.jsonl -------------------------------------------------------


def recorded(tmp_path, stdin, bad="bad"):
    record = tmp_path / "rec.jsonl"
    result = CliRunner().invoke(
        app, ["run", WORDS, "--record", str(record)], input=stdin,
        env={**ENV, "EMIT_TEST_BAD_WORD": bad},
    )  # fmt: skip
    assert result.exit_code == (1 if bad else 0)
    return record


def test_inspect_sums_up_a_record_per_node_from_its_hop_lines(tmp_path):
    record = recorded(tmp_path, "the bad rain\nin spain bad\n\nfalls mainly\n")
    hops = [json.loads(line) for line in record.read_text().splitlines()]
    hops = [hop for hop in hops if hop["kind"] == "hop"]

    result = emit("inspect", str(record), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    for node in summary["nodes"]:
        mine = [hop for hop in hops if hop["node"] == node["node"]]
        assert node["hops"] == len(mine)
        assert node["sent"] == sum(hop["sent"] for hop in mine)
        assert node["errors"] == sum(hop["outcome"] == "error" for hop in mine)
        assert node["max"] == max(hop["duration"] for hop in mine)
    assert {n["node"] for n in summary["nodes"]} == {hop["node"] for hop in hops}
    assert summary["errors"] == [{"node": name("count"), "type": "ValueError", "count": 2}]
    assert summary["lines"] == {"run": 1, "hop": len(hops)}
    slowest = max(hops, key=lambda hop: hop["duration"])
    assert summary["slowest"][0]["duration"] == slowest["duration"]


def test_inspect_of_a_record_names_the_errors_and_the_slowest_hops(tmp_path):
    record = recorded(tmp_path, "the bad rain\n")
    result = emit("inspect", str(record))
    assert result.exit_code == 1
    assert f"{record}: 6 hops in 1 run" in result.stdout
    assert f"errors: {name('count')} raised ValueError 1 time" in result.stdout
    assert "slowest hops:" in result.stdout
    assert "(input <stdin>:1, record line" in result.stdout


def test_inspect_of_a_clean_record_exits_0_and_1_once_it_has_lines_it_cannot_read(tmp_path):
    record = recorded(tmp_path, "the rain\n", bad="")
    assert emit("inspect", str(record)).exit_code == 0
    with record.open("a") as more:
        more.write("{not json\n[1, 2]\n")
    result = emit("inspect", str(record), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["unreadable"] == 2


def test_inspect_of_a_record_that_cannot_be_read_exits_2(tmp_path):
    result = emit("inspect", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_inspect_counts_a_hop_line_it_cannot_use_once_and_not_as_a_hop(tmp_path):
    record = recorded(tmp_path, "the rain\n", bad="")
    with record.open("a") as more:
        more.write('{"kind": "hop", "node": "x"}\n{"no": "kind"}\n{"kind": "other"}\n')
    summary = json.loads(emit("inspect", str(record), "--json").stdout)
    assert summary["unreadable"] == 3
    assert summary["lines"]["hop"] == sum(node["hops"] for node in summary["nodes"])
    assert set(summary["lines"]) == {"run", "hop"}


def test_inspect_of_a_dead_letter_file_counts_its_failures_and_exits_1(tmp_path):
    letters = tmp_path / "dead.jsonl"
    CliRunner().invoke(
        app, ["run", WORDS, "--json", "--dead-letter", str(letters)],
        input='{"line": "bad word bad"}\n{oops\n', env=ENV,
    )  # fmt: skip
    result = emit("inspect", str(letters), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["lines"] == {"dead-letter": 3}
    assert summary["errors"] == [
        {"node": None, "type": "InputError", "count": 1},
        {"node": name("count"), "type": "ValueError", "count": 2},
    ]
    page = emit("inspect", str(letters)).stdout
    assert "errors: input that could not be read 1 time" in page


def test_inspect_of_a_file_that_is_no_record_exits_2_saying_so(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n{}\n")
    result = emit("inspect", str(text))
    assert result.exit_code == 2
    assert "holds no record or dead-letter lines" in result.stderr


def test_inspect_names_a_record_stopped_part_way_as_such(tmp_path):
    letters = tmp_path / "dead.jsonl"
    letters.write_text(json.dumps({
        "kind": "dead-letter", "run": "r", "source": "-", "line": 1, "node": None,
        "error": {"type": "RunStopped", "text": "interrupted by SIGINT"}, "message": None,
        "input": {"line": "a"},
    }) + "\n")  # fmt: skip
    result = emit("inspect", str(letters))
    assert result.exit_code == 1
    assert "errors: records stopped part-way (RunStopped) 1 time" in result.stdout
