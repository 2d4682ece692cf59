"""The locator for the RQ word-count example: ``examples.rq.graph:router``."""

from . import tasks  # noqa: F401  (registers the nodes)
from .app import router

__all__ = ["router"]
