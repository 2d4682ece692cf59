"""Routers for the command-line tests, one per behaviour under test.

Each is loaded by locator (``emit run tests.graphs.cli_graphs:echo``), in a
subprocess or in the test process, so importing this module has no effects
beyond building the graphs.
"""

import itertools
import os
import time

from emitcli import Router

# The input line upper-cased, unless it is "boom": then the node raises.
echo = Router()


@echo.node(("line",), entry_point=True)
def shout(msg):
    if msg.line == "boom":
        raise ValueError("cannot shout boom")
    return msg.line.upper()


# Whatever fields the input record had, sent on as one value.
fields = Router()


@fields.node(("received",), entry_point=True)
def receive(msg):
    return msg.as_dict()


# Words of a line, checked one by one: a failure part-way through a record.
words = Router()


@words.node(("word",), entry_point=True)
def split_words(msg):
    yield from msg.line.split()


@words.node(("word",), "split_words")
def check_word(msg):
    if msg.word == "bad":
        raise ValueError("the word 'bad' is refused")
    return msg.word


# Two stages, so --output can choose the first, the second or both.
stages = Router()


@stages.node(("text",), entry_point=True)
def parse(msg):
    return msg.line.strip()


@stages.node(("text", "length"), "parse")
def measure(msg):
    return msg.text, len(msg.text)


# An endless generator: the first record starts a stream that never ends.
endless = Router()


@endless.node(("n",), entry_point=True)
def count_forever(msg):
    yield from itertools.count()


# A node that prints, as most first graphs do.
printer = Router()


@printer.node(("line",), entry_point=True)
def print_line(msg):
    print(f"print saw {msg.line}")
    return msg.line


# A node that writes to file descriptor 1 itself and through a child process.
noisy = Router()


@noisy.node(("line",), entry_point=True)
def chatter(msg):
    print(f"print saw {msg.line}")
    os.write(1, f"fd 1 saw {msg.line}\n".encode())
    os.system(f"echo child saw {msg.line}")
    return msg.line


# Many slow outputs per record, so a signal arrives while a record is in flight.
slow = Router()


@slow.node(("line", "part"), entry_point=True)
def dawdle(msg):
    for part in range(50):
        time.sleep(0.1)
        yield msg.line, part


# A node that says it started, then would take a minute without any output.
stuck = Router()


@stuck.node(("line",), entry_point=True)
def hang(msg):
    print("started", flush=True)
    time.sleep(60)
    return msg.line


# A node that says it started, then returns its one output a second later.
napping = Router()


@napping.node(("line",), entry_point=True)
def nap(msg):
    print("started", flush=True)
    time.sleep(1)
    return msg.line


# A generator over each line for the memory test; the sink keeps only a total.
slicer = Router()
SLICED = {"chars": 0}


@slicer.node(("piece",), entry_point=True)
def slice_line(msg):
    line = msg.line
    for start in range(0, len(line), 512):
        yield line[start : start + 512]


@slicer.node(("total",), "slice_line")
def tally(msg):
    SLICED["chars"] += len(msg.piece)


# Two nodes that answer each other forever, stopped by a low hop limit.
cycle = Router(max_hops=5)


@cycle.node(("n",), "pong", entry_point=True)
def ping(msg):
    return msg.get("n", 0) + 1


@cycle.node(("n",), "ping")
def pong(msg):
    return msg.n + 1


# No node is an entry point, so no input can reach the graph.
no_entry = Router()


@no_entry.node(("line",))
def orphan(msg):
    return msg.line


# Not a Router at all.
not_a_router = {"nodes": []}
an_int = 3


def a_function():
    """Not a Router either."""
