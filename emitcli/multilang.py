"""Nodes in other languages: a child process that speaks JSON lines or msgpack.

Subclass :class:`ShellNode`, give it a ``command``, and decorate the class (or
an instance of it) like any node.  Each message goes to the child's stdin; what
the child writes to stdout comes back as the node's results, one per output
object, shaped by the router's usual rules; what it writes to stderr goes to
the log.  The 2013 library started a process per message, ignored exit codes
and took any stderr as failure; here exit codes are checked, stderr is only
logged, and a persistent mode keeps one child for message after message.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, ClassVar, Protocol

import msgpack  # type: ignore[import-untyped]

from .errors import GraphError, ShellNodeError
from .messages import Message

log = logging.getLogger(__name__)

PROTOCOLS = ("json", "msgpack")
MODES = ("per-message", "persistent")
#: Set in the child's environment, so one program can serve either mode and protocol.
MODE_VARIABLE = "EMIT_SHELL_MODE"
PROTOCOL_VARIABLE = "EMIT_SHELL_PROTOCOL"

_CHUNK = 1 << 16
_STDERR_LINE = 1 << 16  # stderr is read in pieces of at most this size
_STDERR_SHOWN = 2_000  # bytes of one stderr line that are logged
_STDERR_TAIL = 5  # stderr lines kept to explain a failure
_QUOTE = 160  # bytes of offending output quoted in an error
_GRACE = 5.0  # seconds a persistent child gets to exit once its stdin is closed


class ShellNode:
    """A node run by a program in any language, over its stdin and stdout.

    Set on a subclass:

    ``command``
        the program and its arguments, as a list or a string split like a
        shell would (``"ruby count.rb"``).
    ``cwd``
        the directory to run it in; a relative path is taken from the file of
        the class that sets it, so it works from any current directory.
    ``protocol``
        ``"json"`` (default): the message is one JSON object on one line, and
        each line the child writes is one output.  ``"msgpack"``: the message
        is one msgpack map, and the child writes a stream of msgpack objects.
    ``mode``
        ``"per-message"`` (default): a new process for each message; its stdin
        is closed after the message and its outputs are read until it exits,
        which must be with status 0.  ``"persistent"``: one long-lived process
        gets message after message, and must mark the end of each message's
        outputs with an empty line (JSON lines) or a msgpack nil, then flush.
        It is started on first use, started again if it died, and closed (its
        stdin closed, then killed if it lingers) at :meth:`close` or exit.
    ``timeout``
        seconds to wait on the child for one message's outputs (time spent
        by nodes downstream while outputs stream does not count); default none.
    ``env``
        variables to add to the child's environment.

    Each output object's keys are the node's fields; any other value fills a
    one-field node.  The child's environment also says which mode and
    protocol it serves (``EMIT_SHELL_MODE``, ``EMIT_SHELL_PROTOCOL``).  A
    child that cannot start, exits non-zero, writes what is not the protocol,
    stops mid-frame or runs past ``timeout`` fails the message with a
    :class:`~emitcli.errors.ShellNodeError` naming the node.
    """

    command: ClassVar[str | Sequence[str] | None] = None
    cwd: ClassVar[str | os.PathLike[str] | None] = None
    protocol: ClassVar[str] = "json"
    mode: ClassVar[str] = "per-message"
    timeout: ClassVar[float | None] = None
    env: ClassVar[Mapping[str, str] | None] = None

    def __init__(self) -> None:
        cls = type(self)
        # The name the router gives an instance: its class's module.qualname.
        self.node_name = f"{cls.__module__}.{cls.__qualname__}"
        self._check_options()
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._children: list[_Child] = []
        self._pid = os.getpid()
        # The finalizer holds the list, not the node, so the node can be
        # collected; it closes whatever persistent children are left at exit.
        weakref.finalize(self, _close_all, self._children)

    def __call__(self, msg: Message) -> Iterator[Any]:
        """Run the command on ``msg``; yield each output as the child writes it."""
        if self.mode == "persistent":
            return self._persistent(msg)
        return self._per_message(msg)

    # The seed's methods ----------------------------------------------------

    def get_command(self) -> list[str]:
        """The command as a list of arguments."""
        command = self.command
        if isinstance(command, str):
            return shlex.split(command)
        return [os.fspath(part) for part in command or ()]

    def get_cwd(self) -> str | None:
        """The directory to run the command in (``None``: the current one)."""
        for cls in type(self).__mro__:
            if "cwd" in vars(cls):
                return _relative_to_class(cls, vars(cls)["cwd"])
        return None

    def serialize(self, msg: Message) -> bytes:
        """The message as the child reads it: one JSON line or one msgpack map."""
        try:
            if self.protocol == "msgpack":
                data: bytes = msgpack.packb(msg.as_dict(), use_bin_type=True)
                return data
            try:
                return (msg.as_json() + "\n").encode()
            except UnicodeEncodeError:
                # A lone surrogate has no UTF-8 form; JSON's escape carries it.
                return (json.dumps(msg.as_dict(), allow_nan=False) + "\n").encode()
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._error(f"cannot send the message as {self.protocol}: {exc}") from None

    def deserialize(self, msg: bytes) -> Any:
        """One output (a JSON line, or a whole msgpack object) as a Python object.

        JSON lines pass each line through here.  A msgpack stream is decoded
        by the stream's own unpacker, which is what finds where an object ends.
        """
        if self.protocol == "msgpack":
            return msgpack.unpackb(msg, raw=False)
        return json.loads(msg)

    def close(self) -> None:
        """Close the persistent children now (they are also closed at exit)."""
        _close_all(self._children)
        with self._lock:
            self._idle.clear()

    # The two modes ---------------------------------------------------------

    def _per_message(self, msg: Message) -> Iterator[Any]:
        payload = self.serialize(msg)
        child = self._spawn()
        try:
            yield from child.exchange(payload, self._decoder(framed=False), last=True)
        finally:
            child.close(kill=True)

    def _persistent(self, msg: Message) -> Iterator[Any]:
        payload = self.serialize(msg)
        child = self._take()
        try:
            yield from child.exchange(payload, self._decoder(framed=True), last=False)
        except BaseException:
            # Failed or abandoned part-way: what the child would write next
            # belongs to this message, so it cannot serve another one.
            self._drop(child)
            raise
        with self._lock:
            self._idle.append(child)

    def _take(self) -> _Child:
        """An idle persistent child, or a new one; one child serves one message at a time."""
        with self._lock:
            if os.getpid() != self._pid:
                # A forked process must not share its parent's pipes.
                self._idle.clear()
                self._children.clear()
                self._pid = os.getpid()
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                log.warning("node %r: child %s; starting another", self.node_name, child.ended())
                self._children.remove(child)
                child.close(kill=True)
        child = self._spawn()
        log.info("node %r: started persistent child %d", self.node_name, child.proc.pid)
        with self._lock:
            self._children.append(child)
        return child

    def _drop(self, child: _Child) -> None:
        with self._lock:
            if child in self._children:
                self._children.remove(child)
        child.close(kill=True)

    # Plumbing --------------------------------------------------------------

    def _spawn(self) -> _Child:
        command = self.get_command()
        env = {**os.environ, **(self.env or {})}
        env[MODE_VARIABLE] = self.mode
        env[PROTOCOL_VARIABLE] = self.protocol
        try:
            # A process group of its own keeps the terminal's Ctrl-C away from
            # the child, so emit can finish the message in flight (DESIGN.md).
            proc = subprocess.Popen(
                command,
                cwd=self.get_cwd(),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
            )
        except OSError as exc:
            where = f" in {self.get_cwd()}" if self.get_cwd() else ""
            raise self._error(
                f"cannot start{where}: {exc.strerror}: {exc.filename!r}; "
                "check that the program is installed and the command and cwd are right"
            ) from None
        log.debug("node %r: started %s as %d", self.node_name, command, proc.pid)
        return _Child(proc, self.node_name, command, self.timeout)

    def _decoder(self, *, framed: bool) -> _Decoder:
        if self.protocol == "msgpack":
            return _MsgpackStream(framed)
        return _JsonLines(self.deserialize, framed)

    def _error(self, problem: str) -> ShellNodeError:
        return ShellNodeError(self.node_name, self.get_command(), problem)

    def _check_options(self) -> None:
        """Refuse a node that cannot work, when it is registered (the router builds it)."""
        name = self.node_name
        if not self.get_command():
            raise GraphError(
                f"shell node {name!r} has no command; set command = 'program args' on the class"
            )
        if self.protocol not in PROTOCOLS:
            raise GraphError(f"shell node {name!r}: protocol must be one of {PROTOCOLS}")
        if self.mode not in MODES:
            raise GraphError(f"shell node {name!r}: mode must be one of {MODES}")
        timeout = self.timeout
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise GraphError(f"shell node {name!r}: timeout must be a positive number of seconds")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node_name!r}: {shlex.join(self.get_command())}>"


def _relative_to_class(cls: type, cwd: str | os.PathLike[str] | None) -> str | None:
    if cwd is None or os.path.isabs(cwd):
        return None if cwd is None else os.fspath(cwd)
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    return os.path.normpath(os.path.join(base, cwd))


# Reading outputs -------------------------------------------------------------


class _BadOutput(Exception):
    """The child wrote something its protocol does not allow."""


class _Decoder(Protocol):
    done: bool

    def feed(self, data: bytes) -> list[Any]: ...

    def rest(self) -> bytes: ...


class _JsonLines:
    """JSON lines: one output a line; in persistent mode an empty line ends a message."""

    def __init__(self, deserialize: Callable[[bytes], Any], framed: bool) -> None:
        self.deserialize = deserialize
        self.framed = framed
        self.done = False
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.pending += data
        if b"\n" not in data:
            return []
        *lines, tail = bytes(self.pending).split(b"\n")
        self.pending = bytearray(tail)
        outputs = []
        for index, line in enumerate(lines):
            if not line.strip():
                if self.framed:  # the end of this message's outputs
                    self.done = True
                    _nothing_after(b"\n".join(lines[index + 1 :]) + tail)
                    break
                continue
            try:
                outputs.append(self.deserialize(line))
            except ValueError as exc:
                raise _BadOutput(f"wrote a line that is not JSON ({exc}): {_quote(line)}") from None
        return outputs

    def rest(self) -> bytes:
        return bytes(self.pending)


class _MsgpackStream:
    """A msgpack stream; in persistent mode a nil ends a message (nil sends nothing anyway)."""

    def __init__(self, framed: bool) -> None:
        self.framed = framed
        self.done = False
        self.unpacker = msgpack.Unpacker(raw=False)
        # Bytes fed but not part of a whole object yet, kept to quote them.
        # The unpacker's tell() also counts a partly parsed object, so the
        # end of the last whole object is noted as each one comes out.
        self.pending = bytearray()
        self.start = 0  # stream position of pending[0]

    def feed(self, data: bytes) -> list[Any]:
        self.unpacker.feed(data)
        self.pending += data
        outputs = []
        try:
            for value in self.unpacker:
                self._consumed(self.unpacker.tell())
                if value is None and self.framed:
                    self.done = True
                    _nothing_after(self.rest())
                    break
                outputs.append(value)
        except (ValueError, msgpack.UnpackException) as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _BadOutput(
                f"wrote output that is not msgpack ({problem}): {_quote(self.rest())}"
            ) from None
        return outputs

    def _consumed(self, position: int) -> None:
        del self.pending[: position - self.start]
        self.start = position

    def rest(self) -> bytes:
        return bytes(self.pending)


def _nothing_after(extra: bytes) -> None:
    if extra:
        raise _BadOutput(
            f"wrote output after the end of a message's outputs: {_quote(extra)}; "
            "write outputs only after reading a message"
        )


def _quote(data: bytes) -> str:
    """The output as text when it is UTF-8 (as bytes when not), cut to a readable length."""
    try:
        text = repr(data[:_QUOTE].decode())
    except UnicodeDecodeError:
        text = repr(data[:_QUOTE])
    return text if len(data) <= _QUOTE else f"{text}... ({len(data):,} bytes)"


# The child process -----------------------------------------------------------


class _Child:
    """One child process, its pipes, and the thread that logs its stderr."""

    def __init__(
        self, proc: subprocess.Popen[bytes], node: str, command: list[str], timeout: float | None
    ) -> None:
        self.proc = proc
        self.node = node
        self.command = command
        self.timeout = timeout
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        assert proc.stdin is not None and proc.stderr is not None
        # Writes go through the selector loop, which must never block on a full pipe.
        os.set_blocking(proc.stdin.fileno(), False)
        # stderr is drained by its own thread whether or not anyone is reading
        # stdout, so a chatty child never blocks on a full stderr pipe.
        self.stderr = threading.Thread(
            target=_log_stderr, args=(proc.stderr, node, self.tail), daemon=True
        )
        self.stderr.start()

    def exchange(self, payload: bytes, decoder: _Decoder, *, last: bool) -> Iterator[Any]:
        """Write ``payload``, yield outputs until the end of this message's outputs.

        With ``last`` the child's stdin is closed after the payload and the end
        is the end of its output; otherwise the decoder sees the end marker.
        """
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        budget = _Budget(self.timeout)
        unsent = memoryview(payload)
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            selector.register(stdin, selectors.EVENT_WRITE)
            while True:
                events = budget.select(selector)
                if events is None:
                    raise self._timed_out(decoder, last)
                for key, _mask in events:
                    if key.fileobj is stdin:
                        unsent = self._write(selector, unsent, last)
                        continue
                    data = os.read(stdout.fileno(), _CHUNK)
                    if not data:
                        self._at_end(decoder, budget, last)
                        return
                    try:
                        outputs = decoder.feed(data)
                    except _BadOutput as exc:
                        self.close(kill=True)
                        raise self._error(str(exc)) from None
                    yield from outputs
                    if decoder.done:
                        return

    def _write(
        self, selector: selectors.BaseSelector, unsent: memoryview, last: bool
    ) -> memoryview:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            unsent = unsent[os.write(stdin.fileno(), unsent[:_CHUNK]) :]
        except BlockingIOError:
            return unsent
        except BrokenPipeError:
            # The child stopped reading (it may have exited); its exit
            # status and output, read next, say whether that was a failure.
            unsent = unsent[:0]
        if not unsent:
            selector.unregister(stdin)
            if last:
                stdin.close()
        return unsent

    def _at_end(self, decoder: _Decoder, budget: _Budget, last: bool) -> None:
        """The child closed its stdout: judge its exit status and what it left."""
        try:
            status = self.proc.wait(budget.left())
        except subprocess.TimeoutExpired:
            raise self._timed_out(decoder, last) from None
        rest = decoder.rest()
        if status != 0:
            self.close(kill=True)
            raise self._error(f"{self.ended()}{self._stderr_tail()}")
        if rest:
            self.close(kill=True)
            raise self._error(
                f"ended its output in the middle of a frame: {_quote(rest)}; "
                + _frame_hint(decoder)
            )
        if not last:
            self.close(kill=True)
            raise self._error(
                "exited before marking the end of a message's outputs; in persistent mode "
                "the child reads message after message and ends each one's outputs with "
                + _marker(decoder)
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ended(self) -> str:
        """How the process ended, in words."""
        status = self.proc.returncode
        if status is not None and status < 0:
            try:
                return f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                return f"was killed by signal {-status}"
        return f"exited with status {status}"

    def close(self, *, kill: bool) -> None:
        """End the process (killed, or asked by closing its stdin) and release its pipes."""
        proc = self.proc
        if not kill and proc.poll() is None:
            _close_quietly(proc.stdin)
            try:
                proc.wait(_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("node %r: child %d did not exit; killing it", self.node, proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _close_quietly(proc.stdin)
        _close_quietly(proc.stdout)
        # Joined with a limit: a grandchild may hold the stderr pipe open.
        self.stderr.join(_GRACE)

    def _timed_out(self, decoder: _Decoder, last: bool) -> ShellNodeError:
        self.close(kill=True)
        hint = "raise timeout on the class if it needs longer"
        if not last:
            hint = (
                f"a persistent child must end each message's outputs with {_marker(decoder)}; "
                f"if it does, {hint}"
            )
        return self._error(
            f"did not finish within its timeout of {self.timeout:g}s: killed; {hint}"
        )

    def _stderr_tail(self) -> str:
        self.stderr.join(_GRACE)
        if not self.tail:
            return ""
        return "; its stderr ended with: " + " | ".join(line[:_QUOTE] for line in self.tail)

    def _error(self, problem: str) -> ShellNodeError:
        return ShellNodeError(self.node, self.command, problem)


class _Budget:
    """The time left to wait on a child for one message (``None``: no limit)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.remaining = timeout

    def select(
        self, selector: selectors.BaseSelector
    ) -> list[tuple[selectors.SelectorKey, int]] | None:
        """Wait for the pipes; ``None`` when the time ran out first."""
        started = time.monotonic()
        events = selector.select(self.remaining)
        if self.remaining is not None:
            self.remaining -= time.monotonic() - started
            if not events and self.remaining <= 0:
                return None
        return events

    def left(self) -> float | None:
        return None if self.remaining is None else max(self.remaining, 0.0)


def _frame_hint(decoder: _Decoder) -> str:
    if isinstance(decoder, _JsonLines):
        return "each JSON line must end with a newline"
    return "the msgpack object was cut short"


def _marker(decoder: _Decoder) -> str:
    return "an empty line" if isinstance(decoder, _JsonLines) else "a msgpack nil"


def _log_stderr(stream: IO[bytes], node: str, tail: collections.deque[str]) -> None:
    """Log each line the child writes to stderr, one record a line, until it closes.

    A line is read in pieces and logged once it ends, cut to its first
    :data:`_STDERR_SHOWN` bytes: a child that dumps a megabyte on one line
    must not flood the log with it.
    """
    with stream:
        head, size = b"", 0
        for raw in iter(lambda: stream.readline(_STDERR_LINE), b""):
            if size < _STDERR_SHOWN:
                head += raw[: _STDERR_SHOWN - size]
            size += len(raw)
            if raw.endswith(b"\n"):
                _log_line(node, tail, head, size)
                head, size = b"", 0
        if size:
            _log_line(node, tail, head, size)


def _log_line(node: str, tail: collections.deque[str], head: bytes, size: int) -> None:
    line = head.rstrip(b"\r\n").decode("utf-8", "replace")
    if size > len(head):
        line += f" ... ({size:,} bytes in all)"
    tail.append(line)
    log.warning("node %r stderr: %s", node, line, extra={"node": node})


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None and not stream.closed:
        # A broken pipe on close leaves nothing to flush.
        with contextlib.suppress(OSError):
            stream.close()


def _close_all(children: list[_Child]) -> None:
    """Close persistent children: stdin first, so each can finish and exit cleanly."""
    while children:
        children.pop().close(kill=False)
