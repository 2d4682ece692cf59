"""emit: a graph of plain Python functions, run from the shell or on RQ workers."""

from .errors import EmitError
from .messages import Message, NoResult
from .router.core import Router

__version__ = "0.5.0.dev0"

__all__ = ["EmitError", "Message", "NoResult", "Router", "__version__"]
