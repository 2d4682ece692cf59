"""A graph module whose import fails inside the user's own code."""

from emitcli import Router

router = Router()


@router.node(("line",), entry_point=True)
def first(msg):
    return msg.line


THRESHOLD = undefined_setting * 2  # noqa: F821
