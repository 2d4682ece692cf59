"""Benchmark: a persistent shell node against a process per message.

    python -m tests.benchmarks.multilang [--messages N] [--rounds R] [--count C]

Both sides run the Python counting child of examples/multilang on the same
small messages (``{"count": C}``, so C outputs each) through a one-node graph
in-process.  The rounds alternate between the two modes so that both see the
same machine state, and the best round of each is compared.  This is not a
test: it prints numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from emitcli import Message, Router
from emitcli.local import LocalEngine
from emitcli.multilang import ShellNode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "multilang"


def counting_node(mode: str) -> type[ShellNode]:
    attrs = {"command": [sys.executable, "count.py"], "cwd": str(EXAMPLES), "mode": mode}
    return type(f"Count_{mode.replace('-', '_')}", (ShellNode,), attrs)


def run(mode: str, messages: int, count: int) -> tuple[float, int]:
    """Messages per second through a fresh node (starting its child included), and outputs."""
    router = Router()
    router.node(("n",), entry_point=True)(counting_node(mode))
    node = router.nodes[router.entry_points[0]].func
    outputs = 0

    def on_output(spec: object, fields: object) -> None:
        nonlocal outputs
        outputs += 1

    engine = LocalEngine(router, on_output=on_output)
    started = time.perf_counter()
    for _ in range(messages):
        engine.send(Message(count=count))
    node.close()
    return messages / (time.perf_counter() - started), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--count", type=int, default=3, help="outputs per message")
    args = parser.parse_args()

    rates: dict[str, list[float]] = {"per-message": [], "persistent": []}
    for _ in range(args.rounds):
        for mode, seen in rates.items():
            rate, outputs = run(mode, args.messages, args.count)
            if outputs != args.messages * args.count:
                raise SystemExit(
                    f"{mode}: {outputs} outputs, expected {args.messages * args.count}"
                )
            seen.append(rate)

    slow, fast = max(rates["per-message"]), max(rates["persistent"])
    print(
        f"messages through the Python counting child: {args.messages:,} "
        f"({args.count} outputs each, {args.rounds} rounds, best of each)"
    )
    print(f"per-message : {slow:>10,.0f} messages/s")
    print(f"persistent  : {fast:>10,.0f} messages/s")
    print(f"ratio       : {fast / slow:>10.1f}x")


if __name__ == "__main__":
    main()
