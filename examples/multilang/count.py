"""The seed's counting node in Python: for each message, its ``count`` numbers as ``n``.

A child of a ShellNode (see graph.py).  It reads one message a line from stdin
and writes each number from 0 up to ``count`` as a line of JSON.  When
``EMIT_SHELL_MODE`` is ``persistent`` (ShellNode sets it for the child) it ends
each message's outputs with an empty line and flushes, as the persistent mode
asks.  When ``EMIT_SHELL_PROTOCOL`` is ``msgpack`` it reads msgpack maps and
writes msgpack integers, ending a message with nil (this needs the msgpack
package, which emit itself depends on).  By hand:

    echo '{"count": 3}' | python examples/multilang/count.py
"""

import json
import os
import sys

PERSISTENT = os.environ.get("EMIT_SHELL_MODE") == "persistent"


def count(message):
    return range(message["count"])


def json_lines():
    out = sys.stdout
    for line in sys.stdin:
        for n in count(json.loads(line)):
            out.write(json.dumps(n) + "\n")
        if PERSISTENT:
            out.write("\n")
            out.flush()


def msgpack_stream():
    import msgpack

    unpacker = msgpack.Unpacker(raw=False)
    out = sys.stdout.buffer
    # read1 returns what the pipe holds; read(n) would wait for n bytes
    # while the parent waits for our answer.
    for data in iter(lambda: sys.stdin.buffer.read1(1 << 16), b""):
        unpacker.feed(data)
        for message in unpacker:
            out.write(b"".join(msgpack.packb(n) for n in count(message)))
            if PERSISTENT:
                out.write(msgpack.packb(None))
                out.flush()


if __name__ == "__main__":
    if os.environ.get("EMIT_SHELL_PROTOCOL") == "msgpack":
        msgpack_stream()
    else:
        json_lines()
