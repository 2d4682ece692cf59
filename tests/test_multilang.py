"""ShellNode: nodes run by real child processes, in Python, Ruby and JavaScript.

Every child here is a real process: short Python programs given with ``-c``,
and the counting programs of examples/multilang under Python, Ruby and Node.js.
Every node has a timeout and the big scenarios run under a guard, so a hang
fails its test instead of stalling the suite; no test asserts how long
anything took.
"""

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import msgpack
import pytest

from emitcli import Message, Router
from emitcli.errors import GraphError, ResultError, ShellNodeError
from emitcli.multilang import ShellNode

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "multilang"
EMIT = str(Path(sys.executable).with_name("emit"))
GUARD = 120  # seconds after which a stuck child or scenario fails the test
MODES = ["per-message", "persistent"]
PROTOCOLS = ["json", "msgpack"]

# Writes each output in the node's protocol, and the end marker in persistent
# mode, so one program serves every combination the tests try.
PRELUDE = """
import json, os, sys
import msgpack
PERSISTENT = os.environ["EMIT_SHELL_MODE"] == "persistent"
MSGPACK = os.environ["EMIT_SHELL_PROTOCOL"] == "msgpack"

def messages():
    if not MSGPACK:
        for line in sys.stdin:
            yield json.loads(line)
        return
    unpacker = msgpack.Unpacker(raw=False)
    for data in iter(lambda: sys.stdin.buffer.read1(65536), b""):
        unpacker.feed(data)
        yield from unpacker

def send(value):
    if MSGPACK:
        sys.stdout.buffer.write(msgpack.packb(value))
    else:
        sys.stdout.write(json.dumps(value) + "\\n")

def done():
    if PERSISTENT:
        sys.stdout.buffer.write(msgpack.packb(None)) if MSGPACK else sys.stdout.write("\\n")
    sys.stdout.flush()
"""

ECHO = """
for message in messages():
    send({"pid": os.getpid(), "echo": message})
    done()
"""


def child(code, name="Child", **attrs):
    """A ShellNode class whose child is this Python program, after PRELUDE."""
    attrs.setdefault("timeout", GUARD)
    script = PRELUDE + textwrap.dedent(code)
    return type(name, (ShellNode,), {"command": [sys.executable, "-c", script], **attrs})


class OneNode:
    """A graph of one entry node; calling it sends a message and returns the fields sent."""

    def __init__(self, node_class, fields):
        self.router = Router()
        self.router.node(fields, entry_point=True)(node_class)
        self.name = self.router.entry_points[0]
        self.node = self.router.nodes[self.name].func

    def __call__(self, **fields):
        return [message.as_dict() for message in self.router(fields)]


@pytest.fixture
def graph():
    """Build one-node graphs; close their children when the test ends."""
    made = []

    def build(node_class, fields=("n",)):
        made.append(OneNode(node_class, fields))
        return made[-1]

    yield build
    for one in made:
        one.node.close()


def guarded(function, *args):
    """Run ``function`` in a thread; fail the test if it has not finished within GUARD."""
    result = {}

    def target():
        try:
            result["value"] = function(*args)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(GUARD)
    if thread.is_alive():
        pytest.fail(f"still running after {GUARD}s: the shell node hangs")
    if "error" in result:
        raise result["error"]
    return result["value"]


def wait_for_exit(pid):
    """Wait until a process has exited, without reaping it (that is its parent's job)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], GUARD)
    finally:
        os.close(fd)
    assert ready, f"process {pid} still runs after {GUARD}s"


def is_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# Protocols and modes ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_each_message_reaches_the_child_whole_and_its_outputs_are_the_fields(graph, mode, protocol):
    echo = graph(child(ECHO, mode=mode, protocol=protocol), ("pid", "echo"))
    sent = [
        {"text": "naïve ☃", "nested": {"a": [1, 2.5, None, True]}},
        {"text": "", "nested": {}},
        {"text": "line\nbreak", "nested": {"b": "\\"}},
    ]

    outputs = [echo(**message) for message in sent]

    assert [[out["echo"] for out in outs] for outs in outputs] == [[m] for m in sent]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_a_per_message_node_starts_a_process_each_time_and_a_persistent_one_keeps_one(
    graph, mode, protocol
):
    echo = graph(child(ECHO, mode=mode, protocol=protocol), ("pid", "echo"))

    pids = [echo(i=i)[0]["pid"] for i in range(3)]

    assert len(set(pids)) == (1 if mode == "persistent" else 3)


def test_integers_keep_every_digit_through_a_json_child(graph):
    echo = graph(child(ECHO), ("pid", "echo"))
    big = 2**70 + 1

    assert echo(big=big)[0]["echo"] == {"big": big}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bare_value_or_a_dict_of_other_keys_fills_a_one_field_node(graph, protocol):
    values = [7, "seven", [7], {"other": 7}, {"value": 7}]
    node = graph(child(f"next(messages())\nfor v in {values!r}: send(v)", protocol=protocol))

    outputs = node(go=True)

    # A dict whose keys are exactly the fields is the message itself.
    assert outputs == [{"n": v} for v in values[:-1]] + [{"n": {"value": 7}}]
    two = graph(child("next(messages())\nsend({'value': 7})", protocol=protocol), ("value",))
    assert two(go=True) == [{"value": 7}]


def test_an_output_that_does_not_fit_the_fields_is_the_routers_error_naming_the_node(graph):
    node = graph(child("next(messages())\nsend({'a': 1})"), ("a", "b"))

    with pytest.raises(ResultError, match=r"Child.*missing \['b'\]"):
        node(go=True)


@pytest.mark.parametrize("mode", MODES)
def test_outputs_are_yielded_while_the_child_still_runs(tmp_path, mode):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The child sends one output, then waits for the test to open the gate:
    # a node that read all output first would wait for it and time out.
    code = """
    for message in messages():
        send("before"); sys.stdout.flush()
        open(message["gate"]).read()
        send("after"); done()
    """
    node = child(code, mode=mode, timeout=30)()

    outputs = node(Message(gate=str(gate)))
    first = next(outputs)
    gate.write_text("open")

    assert [first, *outputs] == ["before", "after"]
    node.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_node_whose_outputs_are_abandoned_part_way_ends_its_child(mode):
    node = child("next(messages())\nwhile True: send(os.getpid())", mode=mode)()

    outputs = node(Message(go=True))
    pid = next(outputs)
    outputs.close()

    assert is_gone(pid)
    node.close()


def test_a_decorated_instance_is_known_by_its_class_name_and_runs():
    class Count(ShellNode):
        command = [sys.executable, "count.py"]
        cwd = "../examples/multilang"

    router = Router()
    node = Count()
    router.node(("n",), entry_point=True)(node)

    assert router.entry_points == [f"{__name__}.{Count.__qualname__}"]
    assert [m.as_dict() for m in router(count=2)] == [{"n": 0}, {"n": 1}]


def test_a_relative_cwd_is_taken_from_the_file_of_the_class(graph, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls = type(
        "Count",
        (ShellNode,),
        {"command": [sys.executable, "count.py"], "cwd": "../examples/multilang"},
    )
    base = graph(cls)
    subclass = graph(type("Sub", (cls,), {"mode": "persistent"}))

    assert base(count=3) == subclass(count=3) == [{"n": n} for n in range(3)]


# The persistent child's life ---------------------------------------------------


def test_a_persistent_child_that_died_between_messages_is_started_again(graph, caplog):
    echo = graph(child(ECHO, mode="persistent"), ("pid", "echo"))
    first = echo(i=1)[0]["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for_exit(first)

    with caplog.at_level(logging.WARNING, "emitcli.multilang"):
        second = echo(i=2)

    assert second[0]["echo"] == {"i": 2}
    assert second[0]["pid"] != first
    assert any("killed by SIGKILL; starting another" in r.getMessage() for r in caplog.records)


def test_a_persistent_child_that_fails_a_message_is_replaced_for_the_next(graph):
    code = """
    for message in messages():
        if message["crash"]:
            sys.exit(5)
        send(os.getpid()); done()
    """
    node = graph(child(code, mode="persistent"))
    before = node(crash=False)[0]["n"]

    with pytest.raises(ShellNodeError, match="exited with status 5"):
        node(crash=True)

    after = node(crash=False)[0]["n"]
    assert after != before
    assert is_gone(before)


def test_a_persistent_child_that_exits_without_the_end_marker_is_an_error(graph):
    node = graph(child("next(messages())\nsend(1)", mode="persistent"))

    with pytest.raises(ShellNodeError, match=r"before marking the end.*an empty line"):
        node(go=True)


def test_persistent_children_are_closed_when_the_interpreter_exits(tmp_path):
    closed = tmp_path / "closed"
    code = f"""
    for message in messages():
        send(message["i"]); done()
    open({str(closed)!r}, "w").write("stdin ended")
    """
    script = textwrap.dedent(
        f"""
        import sys
        from emitcli import Router
        from emitcli.multilang import ShellNode
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_multilang import child

        router = Router()
        router.node(("n",), entry_point=True)(child({code!r}, mode="persistent"))
        print([m.n for m in router(i=1)] + [m.n for m in router(i=2)])
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=GUARD, check=True
    )

    assert done.stdout.strip() == "[1, 2]"
    assert closed.read_text() == "stdin ended"


# Errors ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_non_zero_exit_is_an_error_naming_the_node_status_and_stderr(graph, mode):
    code = "next(messages())\nprint('cannot count', file=sys.stderr)\nsys.exit(3)"
    node = graph(child(code, name="Failing", mode=mode))

    with pytest.raises(ShellNodeError) as failed:
        node(go=True)

    assert failed.value.node == node.name
    assert f"shell node {node.name!r}" in str(failed.value)
    assert "exited with status 3; its stderr ended with: cannot count" in str(failed.value)


@pytest.mark.parametrize("mode", MODES)
def test_output_that_is_not_json_is_quoted_in_the_error(graph, mode):
    node = graph(child("next(messages())\nprint('this is not json')", mode=mode))

    with pytest.raises(ShellNodeError, match=rf"{node.name}.*not JSON.*'this is not json'"):
        node(go=True)


def test_long_junk_is_quoted_cut_short_with_its_size(graph):
    junk = "x" * 5000
    node = graph(child(f"next(messages())\nprint({junk!r})"))

    with pytest.raises(ShellNodeError) as failed:
        node(go=True)

    assert f"... ({len(junk):,} bytes)" in str(failed.value)
    assert junk not in str(failed.value)


@pytest.mark.parametrize("mode", MODES)
def test_output_that_is_not_msgpack_is_quoted_in_the_error(graph, mode):
    # 0xc1 is the one byte msgpack never uses.
    code = "next(messages())\nsys.stdout.buffer.write(msgpack.packb(1) + b'\\xc1junk')"
    node = graph(child(code, mode=mode, protocol="msgpack"))

    with pytest.raises(ShellNodeError, match=r"not msgpack.*\\xc1junk"):
        node(go=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_a_half_written_frame_at_the_end_of_output_is_an_error(graph, mode, protocol):
    frame = msgpack.packb(["a", "b"]) if protocol == "msgpack" else b'{"n": 1}\n'
    code = f"next(messages())\nsys.stdout.buffer.write({frame[:-1]!r})"
    node = graph(child(code, mode=mode, protocol=protocol))

    with pytest.raises(ShellNodeError, match=rf"{node.name}.*middle of a frame") as failed:
        node(go=True)

    cut = frame[:-1]
    assert (repr(cut) if protocol == "msgpack" else repr(cut.decode())) in str(failed.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_child_past_its_timeout_is_killed_and_named(mode):
    code = (
        f"next(messages())\nsend(os.getpid()); sys.stdout.flush()\nimport time; time.sleep({GUARD})"
    )
    node = child(code, name="Slow", mode=mode, timeout=0.5)()

    outputs = node(Message(go=True))
    pid = next(outputs)
    with pytest.raises(ShellNodeError, match=r"Slow.*timeout of 0.5s"):
        next(outputs)

    assert is_gone(pid)
    node.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_command_that_cannot_start_is_an_error_naming_node_and_program(graph, mode):
    missing = type(
        "Missing", (ShellNode,), {"command": "emit-no-such-program --count", "mode": mode}
    )
    node = graph(missing)

    with pytest.raises(ShellNodeError, match=r"Missing.*cannot start.*'emit-no-such-program'"):
        node(go=True)


def test_a_missing_cwd_is_an_error_naming_it(graph, tmp_path):
    node = graph(type("Lost", (ShellNode,), {"command": "true", "cwd": str(tmp_path / "gone")}))

    with pytest.raises(ShellNodeError, match=rf"Lost.*cannot start.*{tmp_path / 'gone'}"):
        node(go=True)


@pytest.mark.parametrize(
    ("attrs", "problem"),
    [
        ({}, "has no command"),
        ({"command": "true", "mode": "forever"}, "mode must be one of"),
        ({"command": "true", "protocol": "xml"}, "protocol must be one of"),
        ({"command": "true", "timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_a_node_that_cannot_work_is_refused_when_registered(attrs, problem):
    broken = type("Broken", (ShellNode,), attrs)

    with pytest.raises(GraphError, match=rf"Broken.*{problem}"):
        Router().node(("n",))(broken)


# stderr and big streams --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_childs_stderr_goes_to_the_log_a_record_a_line_with_the_node(graph, caplog, mode):
    lines = ["starting", "", "half way", "done"]
    code = f"""
    for message in messages():
        for line in {lines!r}:
            print(line, file=sys.stderr, flush=True)
        send(1); done()
    """
    node = graph(child(code, mode=mode))

    with caplog.at_level(logging.WARNING, "emitcli.multilang"):
        outputs = node(go=True)
        node.node.close()  # joins the thread that logs stderr

    records = [r for r in caplog.records if r.name == "emitcli.multilang"]
    assert outputs == [{"n": 1}]
    assert [r.getMessage() for r in records] == [f"node {node.name!r} stderr: {x}" for x in lines]
    assert {r.node for r in records} == {node.name}


BIG = """
LINE = 1021  # a JSON string of this length is 1,024 bytes with its quotes and newline
for message in messages():
    for i in range(150):
        print("e" * 1023, file=sys.stderr)
    for i in range(1024):
        send(f"{i:06d}".ljust(LINE, "x"))
    for i in range(150):
        print("e" * 1023, file=sys.stderr)
    done()
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_child_writing_1mb_to_stdout_and_300kb_to_stderr_finishes_three_messages(
    graph, caplog, mode
):
    node = graph(child(BIG, mode=mode))
    expected = [{"n": f"{i:06d}".ljust(1021, "x")} for i in range(1024)]

    with caplog.at_level(logging.WARNING, "emitcli.multilang"):
        outputs = guarded(lambda: [node(i=i) for i in range(3)])
        node.node.close()

    assert outputs == [expected] * 3
    assert sum(len(json.dumps(o["n"])) + 1 for o in outputs[0]) == 1 << 20
    stderr = [r for r in caplog.records if r.name == "emitcli.multilang"]
    assert len(stderr) == 3 * 300


def test_a_300kb_stderr_line_is_logged_once_cut_to_its_first_2000_bytes(graph, caplog):
    code = """
    for message in messages():
        print("x" * 300_000, file=sys.stderr)
        print("after", file=sys.stderr, flush=True)
        send(1); done()
    """
    node = graph(child(code, mode="persistent"))

    with caplog.at_level(logging.WARNING, "emitcli.multilang"):
        node(go=True)
        node.node.close()

    logged = [r.getMessage() for r in caplog.records if r.name == "emitcli.multilang"]
    prefix = f"node {node.name!r} stderr: "
    assert logged == [prefix + "x" * 2000 + " ... (300,001 bytes in all)", prefix + "after"]


def test_a_1mb_message_reaches_a_child_that_writes_1mb_before_reading_it(graph):
    # The child fills its stdout pipe before it reads a byte of stdin: a node
    # that wrote the whole message before reading would wait for ever.
    code = """
    for i in range(1024):
        send("o" * 1021)
    message = next(messages())
    send(len(message["pad"]))
    """
    node = graph(child(code))
    pad = "p" * (1 << 20)

    outputs = guarded(lambda: node(pad=pad))

    assert outputs == [{"n": "o" * 1021}] * 1024 + [{"n": len(pad)}]


# The examples ------------------------------------------------------------------

INSTALL = {"ruby": "apt-get install -y ruby", "node": "apt-get install -y nodejs"}
COUNTERS = {
    "python": [sys.executable, "count.py"],
    "ruby": ["ruby", "count.rb"],
    "node": ["node", "count.js"],
}


def example(language, mode, protocol="json"):
    """A node running the example counter in ``language``; fails if it is not installed."""
    command = COUNTERS[language]
    if shutil.which(command[0]) is None:
        pytest.fail(
            f"{command[0]} is not installed; the multilang tests need it: {INSTALL[language]}"
        )
    attrs = {"command": command, "cwd": str(EXAMPLES), "mode": mode, "protocol": protocol}
    return type(f"{language.title()}Count", (ShellNode,), {**attrs, "timeout": GUARD})


@pytest.mark.parametrize(
    ("language", "protocol"),
    [("python", "json"), ("python", "msgpack"), ("ruby", "json"), ("node", "json")],
)
@pytest.mark.parametrize("mode", MODES)
def test_the_counting_example_counts_in_each_language_and_mode(graph, language, mode, protocol):
    node = graph(example(language, mode, protocol))
    counts = [3, 0, 1, 5]

    outputs = [node(count=count) for count in counts]

    assert outputs == [[{"n": n} for n in range(count)] for count in counts]


def test_the_multilang_graph_runs_under_emit_run_from_any_directory(tmp_path):
    for program in ("ruby", "node"):
        if shutil.which(program) is None:
            pytest.fail(
                f"{program} is not installed; the example graph needs it: {INSTALL[program]}"
            )

    done = subprocess.run(
        [EMIT, "run", "examples.multilang.graph:router", "--app-dir", str(ROOT)],
        input=b"3\n2\n",
        capture_output=True,
        cwd=tmp_path,
        timeout=GUARD,
        check=False,
    )

    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    nodes = [f"examples.multilang.graph.{c}" for c in ("PythonCount", "RubyCount", "NodeCount")]
    assert lines == [
        {"n": n, "@node": node} for count in (3, 2) for node in nodes for n in range(count)
    ]


def test_emit_run_reports_a_failing_shell_node_and_goes_on(tmp_path):
    app = tmp_path / "picky.py"
    app.write_text(
        textwrap.dedent(
            """
            import sys
            from emitcli import Router
            from emitcli.multilang import ShellNode

            router = Router()

            @router.node(("n",), entry_point=True)
            class Picky(ShellNode):
                command = [sys.executable, "-c", "import json, sys; "
                           "line = json.loads(input())['line']; "
                           "print(line if line.isdigit() else 'junk ' + line)"]
            """
        )
    )

    done = subprocess.run(
        [EMIT, "run", f"{app}:router"],
        input=b"1\nx\n2\n",
        capture_output=True,
        cwd=tmp_path,
        timeout=GUARD,
        check=False,
    )

    assert done.returncode == 1
    assert [json.loads(line)["n"] for line in done.stdout.splitlines()] == [1, 2]
    assert "Picky" in done.stderr.decode()
    assert "'junk x'" in done.stderr.decode()
