"""Routers: the in-process :class:`Router` and the backends built on it."""

from .core import Router

__all__ = ["Router"]
