"""twistd ``--logger`` targets under their first name (see :mod:`zqtwisted.ops.logs`)."""

from zqtwisted.ops.logs import json_logger, text_logger

__all__ = ["json_logger", "text_logger"]
