"""The seed's multilang example: one counting node in Python, Ruby and JavaScript.

    echo 3 | emit run examples.multilang.graph:router

``parse`` turns each input line into the field ``count``; each shell node runs
its program on that message and sends on every number from 0 up to ``count``
as the field ``n``.  The Python node starts a process per message, as the 2013
library did; the Ruby and Node.js ones keep one process for the whole run.
Needs ``ruby`` and ``node`` on PATH.
"""

import sys

from emitcli import Router
from emitcli.multilang import ShellNode

router = Router()


@router.node(("count",), entry_point=True)
def parse(msg):
    return int(msg.line)


@router.node(("n",), "parse")
class PythonCount(ShellNode):
    # This interpreter, so the child finds what emit's own Python has.
    command = [sys.executable, "count.py"]
    cwd = "."


@router.node(("n",), "parse")
class RubyCount(ShellNode):
    command = "ruby count.rb"
    cwd = "."
    mode = "persistent"


@router.node(("n",), "parse")
class NodeCount(ShellNode):
    command = "node count.js"
    cwd = "."
    mode = "persistent"
