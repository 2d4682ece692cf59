"""Graphs for the ``emit digraph`` tests, loaded by locator like a user's graph.

``awkward`` has every kind of name DOT could misread: the DOT keywords
``node``, ``graph`` and ``edge`` as whole names, and names holding quotes,
backslashes (one at the very end), colons and a line break.  It has a cycle
and two nodes without any route.
"""

import re

from emitcli import Router


def renamed(qualname):
    """Give a function the qualified name its node is known by, before it is registered."""

    def rename(func):
        func.__qualname__ = qualname
        return func

    return rename


def relay(msg):
    return msg.text


def exactly(name):
    """A pattern for this one name, whatever characters it holds."""
    return re.escape(name)


awkward = Router()

# Registered by name, so the names are the bare keywords (a decorated
# function's name always starts with its module).  edge -> node closes a cycle.
awkward.register("node", relay, ("text",), exactly("edge"), entry_point=True)
awkward.register("graph", relay, ("text",), exactly("node"))
awkward.register("edge", relay, ("text",), exactly("graph"))


@awkward.node(("text",), exactly("graph"))
@renamed('say "hi": to \\"everyone\\"')
def quoted(msg):
    return msg.text


@awkward.node(("text",), exactly('say "hi": to \\"everyone\\"'))
@renamed("C:\\temp\\")
def windows_path(msg):
    return msg.text


@awkward.node(("text",))
@renamed("port:compass:n")
def colons(msg):
    return msg.text


@awkward.node(("text",))
@renamed("two\nlines")
def broken_line(msg):
    return msg.text
