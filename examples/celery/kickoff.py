"""Send a random document through the graph, as the 2013 example's kickoff did."""

import random

from examples.celery import tasks  # noqa: F401  (registers the nodes)
from examples.celery.app import router

words = "the rain in spain falls mainly on the plain".split(" ")

if __name__ == "__main__":
    results = router(document=" ".join(random.choice(words) for _ in range(50)))
    print(results[0].get(timeout=30))
