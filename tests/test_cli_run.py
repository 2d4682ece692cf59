"""``emit run`` in this process, through Typer's CliRunner.

Options, the shape of the output, failures and the dead-letter file.  Pipes,
signals and what reaches file descriptor 1 need a real process; they are in
``test_cli_pipes.py``.
"""

import base64
import json
import logging
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emitcli import __version__
from emitcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = "tests.graphs.cli_graphs"


def node(name):
    """The name emit gives a node of the test graphs."""
    return f"{GRAPHS}.{name}"


@pytest.fixture(autouse=True)
def from_repository_root(monkeypatch):
    """Run where a user would, the repository root, and leave sys.path as found."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))


# Plain text at a known width, whatever the shell running the tests has set.
ENV = {
    "COLUMNS": "100",
    "TERMINAL_WIDTH": None,
    "FORCE_COLOR": None,
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
}


def emit(*args, stdin=""):
    return CliRunner().invoke(app, list(args), input=stdin, env=ENV)


def objects(result):
    """Every stdout line, parsed; fails if any line is not one JSON object."""
    assert result.stdout == "" or result.stdout.endswith("\n")
    parsed = [json.loads(line) for line in result.stdout.split("\n")[:-1]]
    assert all(isinstance(obj, dict) for obj in parsed)
    return parsed


def stderr_lines(result):
    return result.stderr.splitlines()


def failures(result):
    """The stderr lines that report a failed record, without the summary."""
    return [line for line in stderr_lines(result) if " records" not in line]


# Input -------------------------------------------------------------------


def test_each_raw_line_is_one_message_in_the_field_named_line():
    lines = ["alpha", "beta gamma", "", "  spaced  "]
    result = emit("run", f"{GRAPHS}:echo", stdin="\n".join(lines) + "\n")

    assert result.exit_code == 0, result.stderr
    assert objects(result) == [{"line": text.upper(), "@node": node("shout")} for text in lines]


def test_field_option_names_the_field_that_holds_each_line():
    result = emit("run", f"{GRAPHS}:fields", "--field", "document", stdin="one\ntwo\n")

    assert result.exit_code == 0, result.stderr
    assert [obj["received"] for obj in objects(result)] == [
        {"document": "one"},
        {"document": "two"},
    ]


def test_json_lines_make_each_object_key_a_field_with_its_value_kept_exactly():
    records = [
        {"a": 1, "b": "two"},
        {"nested": {"list": [1, 2.5, None, True]}, "big": 12345678901234567890123456789},
        {"ünïcode": "日本語", "empty": ""},
    ]
    stdin = "".join(json.dumps(record) + "\n" for record in records)

    result = emit("run", f"{GRAPHS}:fields", "--json", stdin=stdin)

    assert result.exit_code == 0, result.stderr
    assert [obj["received"] for obj in objects(result)] == records


def test_files_and_a_dash_for_stdin_are_read_in_the_order_given(tmp_path):
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_text("a\nb\n")
    second.write_text("c\n")

    result = emit("run", f"{GRAPHS}:echo", str(first), "-", str(second), stdin="from stdin\n")

    assert result.exit_code == 0, result.stderr
    assert [obj["line"] for obj in objects(result)] == ["A", "B", "FROM STDIN", "C"]
    assert "4 records" in result.stderr


def test_a_failure_is_reported_with_the_file_and_line_it_came_from(tmp_path):
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_text("fine\n")
    second.write_text("fine\nboom\nfine\n")

    result = emit("run", f"{GRAPHS}:echo", str(first), str(second))

    assert result.exit_code == 1
    assert failures(result) == [
        f"emit: {second}:2: node {node('shout')!r} raised ValueError: cannot shout boom"
    ]
    assert [obj["line"] for obj in objects(result)] == ["FINE"] * 3


def test_a_missing_input_file_is_a_usage_error_naming_it(tmp_path):
    missing = tmp_path / "absent.txt"

    result = emit("run", f"{GRAPHS}:echo", str(missing))

    assert result.exit_code == 2
    assert stderr_lines(result) == [f"emit: no input file {str(missing)!r}"]
    assert result.stdout == ""


def test_a_field_name_that_is_not_an_identifier_is_a_usage_error():
    result = emit("run", f"{GRAPHS}:echo", "--field", "two words", stdin="x\n")

    assert result.exit_code == 2
    assert len(stderr_lines(result)) == 1
    assert "'two words'" in result.stderr


def test_empty_input_handles_nothing_and_exits_zero():
    result = emit("run", f"{GRAPHS}:echo", stdin="")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert stderr_lines(result)[0].startswith("emit: 0 records, 0 messages out in ")


# Output ------------------------------------------------------------------


def test_each_output_line_is_one_compact_json_object_with_its_node_last():
    result = emit("run", f"{GRAPHS}:stages", stdin=" déjà vu \n")

    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    obj = json.loads(line)
    assert obj == {"text": "déjà vu", "length": 7, "@node": node("measure")}
    assert list(obj)[-1] == "@node"
    assert line == json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def test_by_default_only_the_sinks_are_printed():
    result = emit("run", f"{GRAPHS}:stages", stdin="x\n")

    assert [obj["@node"] for obj in objects(result)] == [node("measure")]


@pytest.mark.parametrize(
    ("options", "printed"),
    [
        (["--output", "parse"], ["parse", "parse"]),
        (["--output", "cli_graphs.measure"], ["measure", "measure"]),
        (["--output", "parse", "--output", "measure"], ["parse", "measure"] * 2),
        (["--output", ".+"], ["parse", "measure"] * 2),
        (["--output", "p.*"], ["parse", "parse"]),
    ],
)
def test_output_option_chooses_the_printed_nodes_by_pattern(options, printed):
    result = emit("run", f"{GRAPHS}:stages", *options, stdin="one\ntwo\n")

    assert result.exit_code == 0, result.stderr
    assert [obj["@node"] for obj in objects(result)] == [node(name) for name in printed]


@pytest.mark.parametrize("pattern", ["nothing", "arse", "stages.parse.more"])
def test_an_output_pattern_that_matches_no_node_is_a_usage_error(pattern):
    result = emit("run", f"{GRAPHS}:stages", "--output", pattern, stdin="x\n")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert stderr_lines(result) == [
        f"emit: --output {pattern!r} matches no node (nodes: {node('measure')}, {node('parse')})"
    ]


def test_an_output_pattern_that_is_not_a_regular_expression_is_a_usage_error():
    result = emit("run", f"{GRAPHS}:stages", "--output", "bad[", stdin="x\n")

    assert result.exit_code == 2
    assert len(stderr_lines(result)) == 1
    assert "--output 'bad[' is not a valid pattern: " in result.stderr


def test_what_a_node_prints_goes_to_stderr_and_stdout_holds_only_json():
    result = emit("run", f"{GRAPHS}:printer", stdin="a\nb\n")

    assert result.exit_code == 0
    assert objects(result) == [{"line": x, "@node": node("print_line")} for x in "ab"]
    assert stderr_lines(result)[:2] == ["print saw a", "print saw b"]


def test_the_summary_on_stderr_counts_records_messages_and_failures():
    result = emit("run", f"{GRAPHS}:words", stdin="a b\nbad c\n\nd\n")

    (summary,) = stderr_lines(result)[-1:]
    assert summary.startswith("emit: 4 records, 4 messages out, 1 error in ")
    assert summary.endswith(" records/s)")


def test_quiet_silences_the_summary_but_not_the_failures():
    result = emit("run", f"{GRAPHS}:echo", "-q", stdin="a\nboom\n")

    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"emit: <stdin>:2: node {node('shout')!r} raised ValueError: cannot shout boom"
    ]
    assert emit("run", f"{GRAPHS}:echo", "--quiet", stdin="a\n").stderr == ""


# Failures ----------------------------------------------------------------


def test_a_node_that_raises_is_reported_and_every_other_message_still_processed():
    result = emit("run", f"{GRAPHS}:words", stdin="one two\nthree bad four\nfive\n")

    assert result.exit_code == 1
    assert [obj["word"] for obj in objects(result)] == ["one", "two", "three", "four", "five"]
    assert failures(result) == [
        f"emit: <stdin>:2: node {node('check_word')!r} raised ValueError: the word 'bad' is refused"
    ]


def test_a_message_dropped_at_the_hop_limit_is_reported_as_a_failure_of_its_record():
    result = emit("run", f"{GRAPHS}:cycle", stdin="a\nb\n")

    assert result.exit_code == 1
    assert result.stdout == ""
    reports = failures(result)
    assert [report.split(": ")[1] for report in reports] == ["<stdin>:1", "<stdin>:2"]
    assert all("hop limit of 5" in report for report in reports)
    assert all(f"{node('ping')} -> {node('pong')}" in report for report in reports)


def test_verbose_adds_the_traceback_of_a_node_that_raised():
    result = emit("run", f"{GRAPHS}:echo", "-v", stdin="boom\n")

    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise ValueError("cannot shout boom")' in result.stderr
    assert "cli_graphs.py" in result.stderr


def test_fail_fast_stops_at_the_first_failed_record():
    result = emit("run", f"{GRAPHS}:echo", "--fail-fast", stdin="a\nboom\nb\nboom\n")

    assert result.exit_code == 1
    assert [obj["line"] for obj in objects(result)] == ["A"]
    assert len(failures(result)) == 1
    assert stderr_lines(result)[-1].startswith(
        "emit: stopped at the first failure (--fail-fast) after 2 records, 1 message out, 1 error "
    )


def test_fail_fast_stops_at_bad_input_too():
    result = emit(
        "run", f"{GRAPHS}:fields", "--json", "--fail-fast", stdin='{"a":1}\n[]\n{"a":2}\n'
    )

    assert result.exit_code == 1
    assert [obj["received"] for obj in objects(result)] == [{"a": 1}]
    assert failures(result) == [
        "emit: <stdin>:2: expected a JSON object (its keys become fields), got an array"
    ]


def test_a_graph_without_an_entry_point_is_a_usage_error():
    result = emit("run", f"{GRAPHS}:no_entry", stdin="x\n")

    assert result.exit_code == 2
    assert len(stderr_lines(result)) == 1
    assert "no entry point" in result.stderr
    assert "entry_point=True" in result.stderr


# The dead-letter file ----------------------------------------------------


def read_letters(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_dead_letter_holds_a_failed_node_with_error_node_line_message_and_input(tmp_path):
    letters = tmp_path / "dead.jsonl"

    result = emit(
        "run", f"{GRAPHS}:words", "--dead-letter", str(letters), stdin="ok\nfine bad word\n"
    )

    assert result.exit_code == 1
    (letter,) = read_letters(letters)
    assert letter["kind"] == "dead-letter"
    assert letter["source"] == "-"
    assert letter["line"] == 2
    assert letter["node"] == node("check_word")
    assert letter["error"]["type"] == "ValueError"
    assert "the word 'bad' is refused" in letter["error"]["text"]
    assert letter["message"] == {"word": "bad"}
    assert letter["input"] == {"line": "fine bad word"}
    assert isinstance(letter["run"], str) and letter["run"]


def test_dead_letter_keeps_bad_json_with_its_line_and_raw_text(tmp_path):
    letters = tmp_path / "dead.jsonl"
    stdin = '{"a": 1}\n{"a": \n{"a": 2}\n'

    result = emit("run", f"{GRAPHS}:fields", "--json", "--dead-letter", str(letters), stdin=stdin)

    assert result.exit_code == 1
    assert [obj["received"] for obj in objects(result)] == [{"a": 1}, {"a": 2}]
    (letter,) = read_letters(letters)
    assert letter["line"] == 2
    assert letter["node"] is None
    assert letter["error"]["text"].startswith("invalid JSON")
    assert letter["raw"] == '{"a": '
    assert letter["input"] is None


def test_dead_letter_keeps_the_exact_bytes_of_a_line_that_is_not_utf8(tmp_path):
    letters = tmp_path / "dead.jsonl"
    bad = b"caf\xe9 au lait"
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"first\n" + bad + b"\nlast\n")

    result = emit("run", f"{GRAPHS}:echo", str(source), "--dead-letter", str(letters))

    assert result.exit_code == 1
    assert [obj["line"] for obj in objects(result)] == ["FIRST", "LAST"]
    (letter,) = read_letters(letters)
    assert letter["source"] == str(source)
    assert letter["line"] == 2
    assert letter["error"]["text"] == "invalid UTF-8 at byte 4"
    assert base64.b64decode(letter["raw_base64"]) == bad


def test_dead_letter_file_is_appended_to_across_runs(tmp_path):
    letters = tmp_path / "dead.jsonl"
    for _ in range(2):
        emit("run", f"{GRAPHS}:echo", "--dead-letter", str(letters), stdin="boom\n")

    first, second = read_letters(letters)
    assert first["run"] != second["run"]
    assert first["input"] == second["input"] == {"line": "boom"}


# Logging -----------------------------------------------------------------


def test_verbose_twice_shows_the_debug_log_of_each_hop():
    result = emit("run", f"{GRAPHS}:stages", "-vv", "-q", stdin="x\ny\n")

    assert result.exit_code == 0, result.stderr
    hop = re.compile(rf"emit: DEBUG emitcli\.local: hop \d+: {node('parse')} -> {node('measure')}")
    assert len([line for line in stderr_lines(result) if hop.fullmatch(line)]) == 2


def test_running_the_command_again_in_one_process_does_not_stack_log_handlers():
    logger = logging.getLogger("emitcli")
    before = list(logger.handlers)
    for _ in range(3):
        assert emit("run", f"{GRAPHS}:echo", "-q", stdin="x\n").exit_code == 0

    added = [handler for handler in logger.handlers if handler not in before]
    assert len(added) <= 1


# The command itself ------------------------------------------------------


def test_version_prints_the_package_version():
    result = emit("--version")

    assert result.exit_code == 0
    assert result.stdout == f"emit {__version__}\n"


def test_help_shows_usage_and_the_run_command():
    result = emit("--help")

    assert result.exit_code == 0
    assert "Usage: emit" in result.stdout
    assert "run" in result.stdout


def test_run_help_shows_every_option_and_the_exit_codes():
    result = emit("run", "--help")

    assert result.exit_code == 0
    for option in [
        "--field",
        "--json",
        "--output",
        "--dead-letter",
        "--fail-fast",
        "--app-dir",
        "--quiet",
        "--verbose",
    ]:
        assert option in result.stdout
    text = " ".join(result.stdout.split())
    assert "0 all handled" in text
    assert "130 interrupted" in text
