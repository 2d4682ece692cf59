"""The Celery app of the 2013 Celery example, with the router built on its task decorator.

Start a worker with ``celery -A examples.celery.app worker -l INFO`` (the broker
comes from EMIT_CELERY_BROKER, default redis://localhost:6379/0).
"""

import os

from celery import Celery

from emitcli.router.celery import CeleryRouter

BROKER = os.environ.get("EMIT_CELERY_BROKER", "redis://localhost:6379/0")

app = Celery("celery_emit_example", broker=BROKER, backend=BROKER)
app.conf.update(imports=("examples.celery.tasks",), task_serializer="json", accept_content=["json"])

router = CeleryRouter(celery_task=app.task, node_modules=["examples.celery.tasks"])
