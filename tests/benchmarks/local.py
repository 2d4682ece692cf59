"""Benchmark: the word-count graph in-process against a plain Python loop.

    python -m tests.benchmarks.local [--words N] [--rounds R]

Both sides do the same work on the same documents: split each document on
single spaces with a generator, update a Counter per word, and build the
``(word, count)`` result.  The graph is the quickstart's (examples/simple)
without its ``print`` calls, which would otherwise measure the terminal.  The
rounds alternate between the two so that both see the same machine state, and
the best round of each is compared.  This is not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

from emitcli import Message, Router
from emitcli.local import LocalEngine
from emitcli.trace import Tally, TracingEngine

WORDS_PER_DOCUMENT = 100


def documents(total_words: int, seed: int = 2013) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)
    ]
    count = total_words // WORDS_PER_DOCUMENT
    return [" ".join(rng.choices(vocabulary, k=WORDS_PER_DOCUMENT)) for _ in range(count)]


def word_count_graph() -> tuple[Router, Counter[str]]:
    router = Router()
    counts: Counter[str] = Counter()

    @router.node(("word",), entry_point=True)
    def words(msg: Message) -> Iterator[str]:
        for word in msg.document.strip().split(" "):
            yield word

    @router.node(("word", "count"), "words")
    def count_word(msg: Message) -> tuple[str, int]:
        counts.update([msg.word])
        return msg.word, counts[msg.word]

    return router, counts


def run_graph(docs: list[str], *, traced: bool = False) -> int:
    router, _counts = word_count_graph()
    outputs = 0

    def on_output(node: object, fields: object) -> None:
        nonlocal outputs
        outputs += 1

    engine: LocalEngine
    if traced:
        # What --trace's table does with each event: tally it per node.
        engine = TracingEngine(router, on_output=on_output, on_event=Tally(sample=10_000).event)
    else:
        engine = LocalEngine(router, on_output=on_output)
    send = engine.send
    for doc in docs:
        send(Message(document=doc))
    return outputs


def run_traced(docs: list[str]) -> int:
    return run_graph(docs, traced=True)


def run_plain(docs: list[str]) -> int:
    counts: Counter[str] = Counter()
    outputs = 0

    def words(document: str) -> Iterator[str]:
        for word in document.strip().split(" "):
            yield word

    for doc in docs:
        for word in words(doc):
            counts.update([word])
            result = (word, counts[word])
            if result:
                outputs += 1
    return outputs


def best_rate(run: Callable[[list[str]], int], docs: list[str], words: int) -> tuple[float, int]:
    started = time.perf_counter()
    outputs = run(docs)
    return words / (time.perf_counter() - started), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-trace", action="store_true", help="skip the run with trace events on")
    args = parser.parse_args()

    docs = documents(args.words)
    words = len(docs) * WORDS_PER_DOCUMENT
    plain: list[float] = []
    emit: list[float] = []
    traced: list[float] = []
    for _ in range(args.rounds):
        rate, plain_out = best_rate(run_plain, docs, words)
        plain.append(rate)
        rate, emit_out = best_rate(run_graph, docs, words)
        emit.append(rate)
        if emit_out != plain_out:
            raise SystemExit(f"outputs differ: graph {emit_out}, plain loop {plain_out}")
        if not args.no_trace:
            rate, traced_out = best_rate(run_traced, docs, words)
            traced.append(rate)
            if traced_out != plain_out:
                raise SystemExit(f"outputs differ: traced {traced_out}, plain loop {plain_out}")

    print(f"words through the word-count graph: {words:,} ({args.rounds} rounds, best of each)")
    print(f"plain Python loop : {max(plain):>12,.0f} words/s")
    print(f"emit Router, local: {max(emit):>12,.0f} words/s")
    print(f"ratio             : {max(emit) / max(plain):>12.1%} of the plain loop")
    if traced:
        print(f"emit, tracing on  : {max(traced):>12,.0f} words/s")
        print(f"tracing costs     : {1 - max(traced) / max(emit):>12.1%} of the untraced rate")


if __name__ == "__main__":
    main()
