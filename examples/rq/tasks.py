"""The 2013 RQ example's nodes: split a document into words, count each word.

Counts live in a Redis sorted set, so every worker adds to the same totals.
"""

from .app import router


@router.node(("word",), entry_point=True)
def emit_words(msg):
    for word in msg.document.strip().split(" "):
        yield word


@router.node(("word", "count"), subscribe_to="tasks.emit_words", queue="words")
def tally_word(msg):
    count = router.redis_connection.zincrby("emit_rq_example", 1, msg.word)
    return msg.word, int(count)
