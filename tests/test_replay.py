"""``emit replay``: recorded and dead-lettered messages sent again, after a fix."""

import base64
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emitcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
WORDS = "tests.graphs.trace_graphs:words"
ENV = {"COLUMNS": "120", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}
TEXT = "the bad rain\nin spain bad\n\nfalls mainly\n"


def name(node):
    return f"tests.graphs.trace_graphs.{node}"


@pytest.fixture(autouse=True)
def from_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("EMIT_TEST_BAD_WORD", raising=False)


def emit(*args, stdin="", fixed=False):
    env = {**ENV, "EMIT_TEST_BAD_WORD": "" if fixed else None}
    return CliRunner().invoke(app, list(args), input=stdin, env=env)


def line(word):
    """An output line of the word graph's sink."""
    return json.dumps({"word": word, "@node": name("shout")}, separators=(",", ":"))


def outputs(result):
    return Counter(result.stdout.splitlines())


@pytest.fixture
def recorded(tmp_path):
    """A run of the word graph with its bug, recorded and dead-lettered."""
    record, letters = tmp_path / "rec.jsonl", tmp_path / "dead.jsonl"
    first = emit("run", WORDS, "--record", str(record), "--dead-letter", str(letters), stdin=TEXT)
    assert first.exit_code == 1
    return first, record, letters


def test_replay_failed_gives_exactly_the_outputs_the_failures_cost(recorded):
    first, record, _ = recorded
    fixed = emit("run", WORDS, stdin=TEXT, fixed=True)
    missing = outputs(fixed) - outputs(first)
    assert missing == Counter({line("BAD"): 2})

    again = emit("replay", str(record), WORDS, "--failed", fixed=True)
    assert again.exit_code == 0, again.stderr
    assert outputs(again) == missing
    assert "2 records, 2 messages out" in again.stderr


def test_replay_failed_from_a_dead_letter_file_gives_the_same(recorded):
    _, _, letters = recorded
    again = emit("replay", str(letters), WORDS, "--failed", fixed=True)
    assert again.exit_code == 0
    assert outputs(again) == Counter({line("BAD"): 2})


def test_replay_reads_a_dead_letter_file_from_stdin_given_a_dash(recorded):
    _, _, letters = recorded
    again = emit("replay", "-", WORDS, "--failed", fixed=True, stdin=letters.read_text())
    assert again.exit_code == 0
    assert outputs(again) == Counter({line("BAD"): 2})


def test_replay_by_default_sends_each_original_input_once(recorded):
    _, record, letters = recorded
    fixed = emit("run", WORDS, stdin=TEXT, fixed=True)
    again = emit("replay", str(record), WORDS, fixed=True)
    assert again.exit_code == 0
    assert outputs(again) == outputs(fixed)
    # The dead-letter file holds the two inputs that failed, each once.
    from_letters = emit("replay", str(letters), WORDS, fixed=True)
    assert "2 records" in from_letters.stderr
    assert outputs(from_letters) == outputs(
        emit("run", WORDS, stdin="the bad rain\nin spain bad\n", fixed=True)
    )


def test_replay_node_sends_what_reached_that_node_to_it_alone(recorded):
    _, record, _ = recorded
    again = emit("replay", str(record), WORDS, "--node", "shout")
    assert again.exit_code == 0
    # shout got one message per counted word; those of length >= 2 come out again.
    assert outputs(again) == Counter(
        line(w) for w in ["THE", "RAIN", "IN", "SPAIN", "FALLS", "MAINLY"]
    )


def test_a_replay_reports_the_lines_it_cannot_use_and_sends_the_rest(tmp_path, recorded):
    _, record, _ = recorded
    lines = record.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    hop = json.loads(lines[1])
    broken = [
        lines[0],
        "{not json",
        json.dumps({"kind": "something"}),
        json.dumps({**hop, "node": "tests.graphs.trace_graphs.gone", "outcome": "error"}),
        json.dumps({**hop, "fields": None, "outcome": "error"}),
        *lines[1:],
    ]
    bad.write_text("\n".join(broken) + "\n")
    result = emit("replay", str(bad), WORDS, "--failed", fixed=True)
    assert result.exit_code == 1
    err = result.stderr
    assert f"{bad}:2: cannot replay: not a JSON line" in err
    assert f"{bad}:3: cannot replay: not a record or dead-letter line (kind 'something')" in err
    assert (
        f"{bad}:4: cannot replay: node 'tests.graphs.trace_graphs.gone' is not in this graph" in err
    )
    assert f"{bad}:5: cannot replay: a hop line without a usable 'fields'" in err
    assert outputs(result) == Counter({line("BAD"): 2})
    assert "4 bad input lines" in err


def test_an_input_line_that_was_never_read_is_reported_not_sent(tmp_path):
    letters = tmp_path / "dead.jsonl"
    first = emit(
        "run", WORDS, "--json", "--dead-letter", str(letters), stdin='{"line": "a b"}\n[1]\n'
    )
    assert first.exit_code == 1
    result = emit("replay", str(letters), WORDS)
    assert result.exit_code == 1
    assert f"{letters}:1: cannot replay: input <stdin>:2 was never read" in result.stderr


def test_the_bytes_of_an_unreadable_line_survive_every_generation_of_dead_letters(tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"ok\ncaf\xe9\n")
    generations = [tmp_path / f"dead{n}.jsonl" for n in range(3)]
    emit("run", WORDS, str(source), "--dead-letter", str(generations[0]))
    for before, after in itertools.pairwise(generations):
        emit("replay", str(before), WORDS, "--dead-letter", str(after))

    letters = [json.loads(path.read_text()) for path in generations]
    assert [base64.b64decode(letter["raw_base64"]) for letter in letters] == [b"caf\xe9"] * 3
    texts = [letter["error"]["text"] for letter in letters[1:]]
    assert texts == [f"cannot replay: input {source}:2 was never read "
                     "(invalid UTF-8 at byte 4); nothing to send"] * 2  # fmt: skip


def test_a_replay_of_a_replay_sends_messages_where_they_went_before(tmp_path, recorded):
    _, record, _ = recorded
    second = tmp_path / "second.jsonl"
    emit("replay", str(record), WORDS, "--failed", "--record", str(second))
    again = emit("replay", str(second), WORDS, fixed=True)
    assert again.exit_code == 0
    assert outputs(again) == Counter({line("BAD"): 2})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([WORDS], "needs a record or dead-letter FILE"),
        (["nope.jsonl", WORDS], "cannot read 'nope.jsonl'"),
        (["x.jsonl", WORDS, "--failed", "--node", "count"], "--failed and --node"),
        (["README.md", WORDS, "--node", "nothing_here"], "--node 'nothing_here' matches no node"),
    ],
)
def test_replay_usage_errors_exit_2(args, message):
    result = emit("replay", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_fix_and_replay_as_a_user_does_in_a_shell(tmp_path):
    """The issue's story: a real file, a failing node, the trace, a fix, the replay."""
    text = tmp_path / "doc.txt"
    text.write_text("".join(f"line {i} has a bad word\n" for i in range(50)))
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("EMIT_TEST_BAD_WORD", None)
    cmd = [sys.executable, "-m", "emitcli"]
    first = subprocess.run(
        f"cat {text} | {' '.join(cmd)} run {WORDS} --trace --record {tmp_path}/rec.jsonl",
        shell=True, capture_output=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert first.returncode == 1
    assert b"<stdin>:1: node 'tests.graphs.trace_graphs.count' raised ValueError" in first.stderr
    assert b"ValueError: cannot count 'bad'" in first.stderr

    fixed_env = {**env, "EMIT_TEST_BAD_WORD": ""}
    again = subprocess.run(
        [*cmd, "replay", f"{tmp_path}/rec.jsonl", WORDS, "--failed"],
        capture_output=True, cwd=ROOT, env=fixed_env, timeout=60,
    )  # fmt: skip
    full = subprocess.run(
        [*cmd, "run", WORDS, str(text)], capture_output=True, cwd=ROOT, env=fixed_env, timeout=60
    )
    assert again.returncode == 0
    missing = Counter(full.stdout.splitlines()) - Counter(first.stdout.splitlines())
    assert Counter(again.stdout.splitlines()) == missing
    assert sum(missing.values()) == 50
