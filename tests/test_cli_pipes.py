"""``emit run`` as a real process in real pipelines: pipes, signals, bytes, size.

Each test starts the virtualenv's ``emit`` script.  Every wait has a generous
timeout, so a hang fails the test instead of stalling the suite; no test
asserts how long anything took.
"""

import contextlib
import json
import os
import pty
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).with_name("emit"))
GRAPHS = "tests.graphs.cli_graphs"
TIMEOUT = 60
# What emit decides from the environment stays as it is for a plain pipe,
# whatever the shell running the tests has set.
ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"}
}


def node(name):
    return f"{GRAPHS}.{name}"


def run_emit(*args, stdin=b"", cwd=ROOT):
    """Run emit to its end on ``stdin``; kill it and fail if it outlives the timeout."""
    return subprocess.run(
        [EMIT, *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=ENV,
        timeout=TIMEOUT,
        check=False,
    )


@contextlib.contextmanager
def spawn(*args, env=ENV, **pipes):
    """Start emit with the given streams; on the way out make sure it is gone."""
    proc = subprocess.Popen([EMIT, *args], cwd=ROOT, env=env, **pipes)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def read_lines(stream, count):
    """Read from a pipe until ``count`` whole lines came; fail after the timeout."""
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while data.count(b"\n") < count:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            pytest.fail(f"waited {TIMEOUT}s for {count} lines, got {data!r}")
        chunk = os.read(stream.fileno(), 1 << 16)
        if not chunk:
            pytest.fail(f"the pipe closed after {data!r}, before {count} lines")
        data += chunk
    return data


def objects(stdout):
    """Every stdout line, parsed; fails on anything but whole JSON objects."""
    text = stdout.decode("utf-8")
    assert text == "" or text.endswith("\n"), f"stdout ends mid-line: {text[-80:]!r}"
    # Split on "\n" alone: str.splitlines() would also split inside a string
    # holding U+2028 or U+0085, which JSON may carry unescaped.
    parsed = [json.loads(line) for line in text.split("\n")[:-1]]
    assert all(isinstance(obj, dict) and "@node" in obj for obj in parsed)
    return parsed


def lines_of(stderr):
    return stderr.decode("utf-8").splitlines()


def test_the_installed_command_answers_version_and_help():
    version = run_emit("--version")
    run_help = run_emit("run", "--help")

    assert version.returncode == 0
    assert version.stdout.decode().startswith("emit ")
    assert run_help.returncode == 0
    assert b"--dead-letter" in run_help.stdout


# | head --------------------------------------------------------------------


def test_head_on_an_endless_generator_ends_the_pipeline_with_an_empty_stderr(tmp_path):
    errors = tmp_path / "stderr.txt"
    with (
        errors.open("wb") as stderr,
        spawn(
            "run", f"{GRAPHS}:endless", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        ) as emit,
    ):
        head = subprocess.Popen(["head", "-n", "1"], stdin=emit.stdout, stdout=subprocess.PIPE)
        emit.stdout.close()  # head holds the only reading end now
        emit.stdin.write(b"go\n")
        emit.stdin.flush()  # and stdin stays open: only the closed stdout can end emit

        first, _ = head.communicate(timeout=TIMEOUT)
        code = emit.wait(timeout=TIMEOUT)

    assert objects(first) == [{"n": 0, "@node": node("count_forever")}]
    assert code == 0
    assert errors.read_bytes() == b""


# Signals -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_reading_an_open_pipe_stops_with_whole_lines_and_one_line(signum):
    with spawn(
        "run",
        f"{GRAPHS}:echo",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as emit:
        emit.stdin.write(b"one\ntwo\nthree\n")
        emit.stdin.flush()
        seen = read_lines(emit.stdout, 3)

        emit.send_signal(signum)
        code = emit.wait(timeout=TIMEOUT)  # stdin is still open: the signal ended it
        out = seen + emit.stdout.read()
        err = emit.stderr.read()

    assert code == 128 + signum
    assert [obj["line"] for obj in objects(out)] == ["ONE", "TWO", "THREE"]
    (line,) = lines_of(err)
    assert line.startswith(f"emit: interrupted by {signum.name} ")
    assert " after 3 records, 3 messages out " in line


def test_ctrl_c_in_the_middle_of_a_record_keeps_whole_lines_and_records_the_record(tmp_path):
    letters = tmp_path / "dead.jsonl"
    with spawn(
        "run",
        f"{GRAPHS}:slow",
        "--dead-letter",
        str(letters),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as emit:
        emit.stdin.write(b"long job\n")
        emit.stdin.flush()
        seen = read_lines(emit.stdout, 1)  # the record's first of 50 parts

        emit.send_signal(signal.SIGINT)
        code = emit.wait(timeout=TIMEOUT)
        out = seen + emit.stdout.read()
        err = emit.stderr.read()

    assert code == 130
    parts = [obj["part"] for obj in objects(out)]
    assert parts == list(range(len(parts)))
    assert len(parts) < 50
    (line,) = lines_of(err)
    assert line.startswith("emit: interrupted by SIGINT at <stdin>:1 after 1 record, ")
    (letter,) = [json.loads(text) for text in letters.read_text().splitlines()]
    assert letter["line"] == 1
    assert letter["input"] == {"line": "long job"}
    assert "interrupted" in letter["error"]["text"]


def test_a_record_stopped_by_ctrl_c_is_printed_or_kept_but_never_both(tmp_path):
    letters = tmp_path / "dead.jsonl"
    with spawn(
        "run",
        f"{GRAPHS}:napping",
        "--dead-letter",
        str(letters),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as emit:
        emit.stdin.write(b"late\n")
        emit.stdin.flush()
        assert read_lines(emit.stderr, 1) == b"started\n"

        emit.send_signal(signal.SIGINT)  # while the node naps, before its output
        code = emit.wait(timeout=TIMEOUT)
        out = emit.stdout.read()
        err = emit.stderr.read()

    assert code == 130
    assert out == b""
    assert err.startswith(b"emit: interrupted by SIGINT at <stdin>:1 after 1 record, ")
    (letter,) = [json.loads(text) for text in letters.read_text().splitlines()]
    assert letter["input"] == {"line": "late"}
    assert letter["error"]["text"] == "interrupted by SIGINT"

    replay = run_emit("replay", str(letters), f"{GRAPHS}:napping", "-q")
    assert replay.returncode == 0
    assert [obj["line"] for obj in objects(replay.stdout)] == ["late"]


def test_a_second_ctrl_c_stops_a_node_that_would_not_finish():
    with spawn(
        "run",
        f"{GRAPHS}:stuck",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as emit:
        emit.stdin.write(b"x\n")
        emit.stdin.flush()
        assert read_lines(emit.stderr, 1) == b"started\n"

        # Two signals sent at once may arrive as one, so keep pressing Ctrl-C
        # until emit ends; the node alone would sleep for a minute.
        deadline = time.monotonic() + TIMEOUT
        while emit.poll() is None and time.monotonic() < deadline:
            emit.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                emit.wait(timeout=0.5)
        code = emit.wait(timeout=TIMEOUT)
        out = emit.stdout.read()
        err = emit.stderr.read()

    assert code == 130
    assert out == b""
    (line,) = lines_of(err)
    assert line.startswith("emit: interrupted by SIGINT at <stdin>:1 after 1 record, ")


# Input bytes ---------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", b"\xef\xbb\xbf"], ids=["nothing", "only a BOM"])
def test_empty_input_exits_zero_at_once_with_only_the_summary(stdin):
    result = run_emit("run", f"{GRAPHS}:echo", stdin=stdin)

    assert result.returncode == 0
    assert result.stdout == b""
    (line,) = lines_of(result.stderr)
    assert line.startswith("emit: 0 records, 0 messages out in ")


def test_a_byte_order_mark_and_crlf_line_ends_are_dropped():
    result = run_emit("run", f"{GRAPHS}:fields", stdin=b"\xef\xbb\xbfone\r\ntwo\r\nthree")

    assert result.returncode == 0, result.stderr
    assert [obj["received"]["line"] for obj in objects(result.stdout)] == ["one", "two", "three"]


def test_a_byte_order_mark_and_crlf_are_dropped_in_json_mode_too():
    stdin = b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n'

    result = run_emit("run", f"{GRAPHS}:fields", "--json", stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert [obj["received"] for obj in objects(result.stdout)] == [{"a": 1}, {"a": 2}]


def test_only_a_newline_ends_a_record():
    inner = ["a\rb", "c\u2028d", "e\x0cf", "g\x85h", "i\x1ej", "k\u2029l"]
    stdin = "".join(text + "\n" for text in inner).encode("utf-8")

    result = run_emit("run", f"{GRAPHS}:fields", stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert [obj["received"]["line"] for obj in objects(result.stdout)] == inner


def test_blank_lines_are_skipped_in_json_mode_and_kept_as_messages_in_raw_mode():
    stdin = b'{"a": 1}\n\n   \n\t\n{"a": 2}\n'

    as_json = run_emit("run", f"{GRAPHS}:fields", "--json", stdin=stdin)
    as_raw = run_emit("run", f"{GRAPHS}:fields", stdin=stdin)

    assert as_json.returncode == 0, as_json.stderr
    assert [obj["received"] for obj in objects(as_json.stdout)] == [{"a": 1}, {"a": 2}]
    assert lines_of(as_json.stderr)[-1].startswith("emit: 2 records, 2 messages out in ")
    raw_lines = stdin.decode().split("\n")[:-1]
    assert [obj["received"]["line"] for obj in objects(as_raw.stdout)] == raw_lines


def test_a_line_of_several_megabytes_passes_whole_in_raw_and_json_mode():
    rng = random.Random(7)
    big = "".join(rng.choices("abcdefghij é", k=6_000_000))

    raw = run_emit("run", f"{GRAPHS}:echo", stdin=f"small\n{big}\nlast\n".encode())
    as_json = run_emit(
        "run", f"{GRAPHS}:fields", "--json", stdin=(json.dumps({"big": big}) + "\n").encode()
    )

    assert raw.returncode == 0, raw.stderr
    assert [obj["line"] for obj in objects(raw.stdout)] == ["SMALL", big.upper(), "LAST"]
    assert as_json.returncode == 0, as_json.stderr
    assert [obj["received"] for obj in objects(as_json.stdout)] == [{"big": big}]


def test_an_integer_of_ten_thousand_digits_passes_through_with_every_digit():
    digits = "9" * 5_000 + "1" * 5_000
    result = run_emit("run", f"{GRAPHS}:fields", "--json", stdin=b'{"n": %s}\n' % digits.encode())

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b'{"received":{"n":' + digits.encode() + b"},")


def test_a_lone_surrogate_escaped_in_json_input_comes_out_as_the_same_escape():
    stdin = b'{"a": "\\ud800 and \\u00e9"}\n{"a": "after"}\n'

    result = run_emit("run", f"{GRAPHS}:fields", "--json", stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert [obj["received"]["a"] for obj in objects(result.stdout)] == ["\ud800 and é", "after"]


def test_bad_json_lines_are_reported_by_line_counted_and_the_good_ones_processed():
    lines = [
        b'{"a": 1}',
        b'{"a": ',
        b"[1, 2]",
        b'{"a": NaN}',
        b'{"a": 3}',
        b"not json at all",
        b'{"a": "\xff"}',
        b'{"a": 4}',
    ]

    result = run_emit("run", f"{GRAPHS}:fields", "--json", stdin=b"\n".join(lines) + b"\n")

    assert result.returncode == 1
    assert [obj["received"] for obj in objects(result.stdout)] == [{"a": 1}, {"a": 3}, {"a": 4}]
    *reports, summary = lines_of(result.stderr)
    assert [report.split(": ")[1] for report in reports] == [
        f"<stdin>:{n}" for n in (2, 3, 4, 6, 7)
    ]
    assert "invalid JSON" in reports[0]
    assert "got an array" in reports[1]
    assert "invalid UTF-8" in reports[4]
    assert summary.startswith("emit: 8 records, 3 messages out, 5 bad input lines in ")


def test_a_line_that_is_not_utf8_is_reported_and_the_others_processed():
    stdin = b"caf\xc3\xa9\nbad \xc3\x28 byte\nlatin \xe9\nfine\n"

    result = run_emit("run", f"{GRAPHS}:echo", stdin=stdin)

    assert result.returncode == 1
    assert [obj["line"] for obj in objects(result.stdout)] == ["CAFÉ", "FINE"]
    *reports, summary = lines_of(result.stderr)
    assert reports == [
        "emit: <stdin>:2: invalid UTF-8 at byte 5",
        "emit: <stdin>:3: invalid UTF-8 at byte 7",
    ]
    assert summary.startswith("emit: 4 records, 2 messages out, 2 bad input lines in ")


# Failures and exit codes -----------------------------------------------------


def test_a_node_that_raises_exits_1_after_processing_every_other_record():
    result = run_emit("run", f"{GRAPHS}:echo", stdin=b"a\nboom\nb\nboom\nc\n")

    assert result.returncode == 1
    assert [obj["line"] for obj in objects(result.stdout)] == ["A", "B", "C"]
    *reports, summary = lines_of(result.stderr)
    assert reports == [
        f"emit: <stdin>:{n}: node {node('shout')!r} raised ValueError: cannot shout boom"
        for n in (2, 4)
    ]
    assert summary.startswith("emit: 5 records, 3 messages out, 2 errors in ")


def test_fail_fast_stops_at_the_first_failure_and_exits_1(tmp_path):
    letters = tmp_path / "dead.jsonl"

    result = run_emit(
        "run",
        f"{GRAPHS}:echo",
        "--fail-fast",
        "--dead-letter",
        str(letters),
        stdin=b"a\nboom\nb\nboom\n",
    )

    assert result.returncode == 1
    assert [obj["line"] for obj in objects(result.stdout)] == ["A"]
    (letter,) = [json.loads(text) for text in letters.read_text().splitlines()]
    assert (letter["line"], letter["node"]) == (2, node("shout"))
    assert letter["error"]["type"] == "ValueError"
    assert "cannot shout boom" in letter["error"]["text"]
    assert letter["message"] == letter["input"] == {"line": "boom"}


def test_whatever_a_node_writes_to_stdout_even_at_the_descriptor_lands_on_stderr():
    result = run_emit("run", f"{GRAPHS}:noisy", stdin=b"a\nb\n")

    assert result.returncode == 0, result.stderr
    assert objects(result.stdout) == [{"line": x, "@node": node("chatter")} for x in "ab"]
    said = lines_of(result.stderr)
    for x in "ab":
        assert {f"print saw {x}", f"fd 1 saw {x}", f"child saw {x}"} <= set(said)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_stops_the_run_without_blaming_a_node():
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [EMIT, "run", f"{GRAPHS}:echo"],
            input=b"a\nb\nc\n",
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=ENV,
            timeout=TIMEOUT,
            check=False,
        )

    assert result.returncode == 1
    (line,) = lines_of(result.stderr)
    assert line == "emit: stopped: cannot write the output: [Errno 28] No space left on device"


def test_a_stdout_closed_from_the_start_stops_the_run_with_one_line(tmp_path):
    letters = tmp_path / "dead.jsonl"  # opened after stdout was closed, so it may get fd 1
    command = f'exec "$0" run {GRAPHS}:echo --dead-letter "$1" >&-'

    result = subprocess.run(
        ["sh", "-c", command, EMIT, str(letters)],
        input=b"a\nboom\n",
        capture_output=True,
        cwd=ROOT,
        env=ENV,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 1
    assert lines_of(result.stderr) == [
        "emit: stopped: cannot write the output: [Errno 9] Bad file descriptor"
    ]
    assert letters.read_text() == ""


# The terminal ------------------------------------------------------------------


def run_on_terminal(*args, stdin):
    """Run emit with stderr on a pseudo-terminal; return its stdout and the terminal's text."""
    leader, follower = pty.openpty()
    terminal = {**ENV, "TERM": "xterm"}  # a dumb terminal would get no live line
    with spawn(
        *args, env=terminal, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=follower
    ) as emit:
        os.close(follower)
        out, _ = emit.communicate(stdin, timeout=TIMEOUT)
    shown = b""
    with contextlib.suppress(OSError):  # reading past the end of a pty is EIO on Linux
        while chunk := os.read(leader, 1 << 16):
            shown += chunk
    os.close(leader)
    return out, shown.decode("utf-8", "replace")


def test_a_progress_line_is_shown_when_stderr_is_a_terminal():
    out, shown = run_on_terminal("run", f"{GRAPHS}:echo", stdin=b"a\nb\n")

    assert [obj["line"] for obj in objects(out)] == ["A", "B"]
    assert "records read" in shown
    assert "2 records, 2 messages out in " in shown


def test_quiet_shows_nothing_on_a_terminal():
    out, shown = run_on_terminal("run", f"{GRAPHS}:echo", "-q", stdin=b"a\nb\n")

    assert [obj["line"] for obj in objects(out)] == ["A", "B"]
    assert shown == ""


# Size ------------------------------------------------------------------------


def write_text_file(path, size, seed):
    """A text of about ``size`` bytes from a fixed vocabulary; return its lines."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzéñü"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(1, 12))) for _ in range(2000)]
    lines = []
    total = 0
    while total < size:
        shape = rng.random()
        if shape < 0.05:
            line = ""
        else:
            line = " ".join(rng.choices(vocabulary, k=rng.randint(1, 60)))
            if shape < 0.25:
                line = line.replace(" ", "  ", rng.randint(1, 3))  # double spaces
            if shape > 0.9:
                line = f"  {line} "
        lines.append(line)
        total += len(line.encode("utf-8")) + 1
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


@pytest.mark.slow
def test_cat_of_a_text_file_through_the_example_gives_exact_word_counts(tmp_path):
    text = tmp_path / "book.txt"
    lines = write_text_file(text, 3_000_000, seed=2013)
    expected = Counter(word for line in lines for word in line.strip().split(" "))

    with (
        subprocess.Popen(["cat", str(text)], stdout=subprocess.PIPE) as cat,
        (tmp_path / "stderr.txt").open("wb") as stderr,
    ):
        result = subprocess.run(
            [EMIT, "run", "examples.simple.graph:router", "--field", "document"],
            stdin=cat.stdout,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=ENV,
            timeout=TIMEOUT * 3,
            check=False,
        )
        cat.stdout.close()

    assert result.returncode == 0, (tmp_path / "stderr.txt").read_text()
    counted = {}
    for obj in objects(result.stdout):
        assert obj["@node"] == "examples.simple.graph.count_word"
        assert obj["count"] == counted.get(obj["word"], 0) + 1
        counted[obj["word"]] = obj["count"]
    assert counted == dict(expected)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_flat_while_a_gigabyte_streams_through_a_generator_node(tmp_path):
    rng = random.Random(11)
    lines = ["".join(rng.choices("abcdefgh ", k=rng.randint(0, 8000))) for _ in range(256)]
    block = "".join(line + "\n" for line in lines).encode()
    repeats = (1 << 30) // len(block)
    samples = {}  # block number -> RSS of emit, taken by the writer as it goes
    sample_at = {repeats // 10, repeats // 4, repeats // 2, 3 * repeats // 4, repeats - 1}

    def write(proc):
        with contextlib.suppress(BrokenPipeError):  # emit died: the asserts tell
            for number in range(repeats):
                proc.stdin.write(block)
                if number in sample_at:
                    samples[number] = rss_kib(proc.pid)
            proc.stdin.close()

    with (
        (tmp_path / "stdout").open("wb") as out,
        (tmp_path / "stderr").open("wb") as err,
        spawn("run", f"{GRAPHS}:slicer", stdin=subprocess.PIPE, stdout=out, stderr=err) as emit,
    ):
        writer = threading.Thread(target=write, args=(emit,), daemon=True)
        writer.start()
        writer.join(timeout=TIMEOUT * 3)
        assert not writer.is_alive(), "emit stopped reading its input"
        code = emit.wait(timeout=TIMEOUT)

    assert code == 0, (tmp_path / "stderr").read_text()
    assert (tmp_path / "stdout").read_bytes() == b""
    (summary,) = lines_of((tmp_path / "stderr").read_bytes())
    assert summary.startswith(f"emit: {repeats * len(lines):,} records, 0 messages out in ")
    early = samples[repeats // 10]
    later = [samples[number] for number in sorted(samples)][1:]
    assert max(later) - early < 8 * 1024, f"RSS grew from {early} KiB: {samples}"
