"""Logging set-up: one readable line per record, and no library that logs content.

pyTelegramBotAPI logs request parameters (message text) at DEBUG, so its logger is held
at CRITICAL whatever the level of ours.
"""

from __future__ import annotations

import logging
import sys

_configured = False


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once per process (later calls only change the level)."""
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    root = logging.getLogger()
    if not _configured:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        _configured = True
    logging.getLogger("messagine").setLevel(level)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    logging.getLogger("TeleBot").setLevel(logging.CRITICAL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
