"""The 2013 Celery example's nodes; the tally is rate limited through its own task."""

from redis import Redis

from .app import BROKER, app, router


@router.node(("word",), entry_point=True)
def emit_words(msg):
    for word in msg.document.strip().split(" "):
        yield word


@router.node(
    ("word", "count"),
    subscribe_to="tasks.emit_words",
    celery_task=app.task(rate_limit="100/s"),
)
def tally_word(msg):
    redis = Redis.from_url(BROKER)
    return msg.word, int(redis.zincrby("celery_emit_example", 1, msg.word))
