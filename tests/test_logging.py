"""Logging: everything under the ``emitcli`` logger tree, never configured by the library."""

import json
import logging
import subprocess
import sys
import textwrap

from emitcli import Router

# Runs in a fresh interpreter, so nothing the command-line tests set up in this
# process (the CLI adds a handler when it runs) can hide what the library does.
LIBRARY_USE = textwrap.dedent(
    """
    import json, logging, sys

    import emitcli
    from emitcli import Message, Router
    from emitcli.local import LocalEngine

    router = Router(max_hops=5)

    @router.node(("word",), entry_point=True)
    def split(msg):
        yield from msg.text.split()

    @router.node(("word",), ["split", "loop"])
    def loop(msg):
        return msg.word

    router.routes
    LocalEngine(router, on_error=lambda *error: None).send(Message(text="a b"))
    try:
        router(text="c")
    except emitcli.EmitError:
        pass

    loggers = {"emitcli": logging.getLogger("emitcli")}
    loggers.update(
        (name, logger)
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("emitcli.") and isinstance(logger, logging.Logger)
    )
    print(json.dumps({
        "cli imported": "emitcli.cli" in sys.modules,
        "loggers": sorted(loggers),
        "handlers": {n: len(lg.handlers) for n, lg in loggers.items()},
        "levels": {n: lg.level for n, lg in loggers.items()},
        "root handlers": len(logging.root.handlers),
    }))
    """
)


def test_the_library_adds_no_handlers_and_sets_no_levels():
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_USE], capture_output=True, text=True, check=True
    )

    report = json.loads(done.stdout)
    assert report["cli imported"] is False
    assert {"emitcli", "emitcli.router", "emitcli.local"} <= set(report["loggers"])
    assert set(report["handlers"].values()) == {0}
    assert set(report["levels"].values()) == {logging.NOTSET}
    assert report["root handlers"] == 0


def test_registration_and_hops_are_logged_at_debug_under_the_emitcli_tree(caplog):
    caplog.set_level(logging.DEBUG, logger="emitcli")
    router = Router()

    @router.node(("word",), entry_point=True)
    def split(msg):
        yield from msg.text.split()

    @router.node(("word",), "split")
    def echo(msg):
        return msg.word

    router(text="rain spain")

    emitted = [r for r in caplog.records if r.name.split(".")[0] == "emitcli"]
    assert {r.name for r in emitted} == {"emitcli.router", "emitcli.local"}
    assert all(r.levelno == logging.DEBUG for r in emitted)
    messages = [r.getMessage() for r in emitted]
    assert any(split.node_name in m and "registered" in m for m in messages)
    hops = [m for m in messages if f"{split.node_name} -> {echo.node_name}" in m]
    assert len(hops) == 2


def test_nothing_is_logged_per_message_when_debug_is_off(caplog):
    caplog.set_level(logging.INFO, logger="emitcli")
    router = Router()
    router.register("tests.a", lambda msg: msg.n, ("n",), entry_point=True)
    router.register("tests.b", lambda msg: msg.n, ("n",), "a")

    for n in range(10):
        router(n=n)

    assert [r for r in caplog.records if r.name.startswith("emitcli")] == []
