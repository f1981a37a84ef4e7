"""Logging: structured JSON for Cloud Logging on Google Cloud, one readable line locally.

On Google Cloud (K_SERVICE or FUNCTION_TARGET set) records go through google-cloud-logging's
StructuredLogHandler to stdout, one JSON object per line, which Cloud Logging ingests with
severity, labels and trace. No logging Client and no setup_logging(): off Google Cloud they
probe the metadata server, and in a function they ship logs from background threads that
get no CPU after the response. google-cloud-logging is imported only on that path (it costs
about half a second). pyTelegramBotAPI logs request parameters (message text) at DEBUG, so
its logger is held at CRITICAL whatever our level.

A record with an exception is written for Error Reporting: ``stack_trace`` holds the
traceback with the exception's type but not its message (which may quote content),
``serviceContext`` names the service and revision, and ``@type`` marks it as an error
event, so Error Reporting groups it by type and frames; the ``message`` stays one line.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import traceback
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_configured = False


class _TraceFilter(logging.Filter):
    """Stamps every record with the current request's Cloud trace (when there is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = _trace.get()
        if trace is not None and not hasattr(record, "trace"):
            record.trace = trace
        return True


ERROR_EVENT_TYPE = ("type.googleapis.com/google.devtools.clouderrorreporting.v1beta1."
                    "ReportedErrorEvent")


def stack_trace(error: BaseException) -> str:
    """A Python traceback of ``error`` naming its type only, never its message."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    frames = "".join(traceback.StackSummary.extract(
        traceback.walk_tb(error.__traceback__), capture_locals=False).format())
    return f"Traceback (most recent call last):\n{frames}{name}\n"


class _ErrorEventFilter(logging.Filter):
    """Turns a record's exception into the fields Error Reporting reads (structured logs)."""

    def __init__(self, service: str, version: str | None) -> None:
        super().__init__()
        self._context = {"service": service, **({"version": version} if version else {})}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            fields: dict[str, Any] = dict(getattr(record, "json_fields", None) or {})
            fields.update({"@type": ERROR_EVENT_TYPE, "serviceContext": self._context,
                           "stack_trace": stack_trace(record.exc_info[1])})
            record.json_fields = fields
            # The traceback is in stack_trace; the message would repeat it with the
            # exception's text, which may quote what a user sent.
            record.exc_info = None
            record.exc_text = None
        return True


class _TextFormatter(logging.Formatter):
    """The local format; structured fields are already in the message as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")


def configure_logging(
    level: str = "INFO", *, structured: bool = False, project_id: str | None = None
) -> None:
    """Configure the root logger once per process (later calls only change the level)."""
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    root = logging.getLogger()
    if not _configured:
        handler: logging.Handler
        if structured:
            from google.cloud.logging_v2.handlers.structured_log import (  # noqa: PLC0415
                StructuredLogHandler,
            )

            handler = StructuredLogHandler(stream=sys.stdout, project_id=project_id)
            # Cloud Run names the service and revision (K_SERVICE, K_REVISION): the
            # platform's facts about this instance, not settings.
            handler.filters.insert(0, _ErrorEventFilter(
                os.environ.get("K_SERVICE") or "messagine", os.environ.get("K_REVISION")))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_TextFormatter())
        # First, so that the Cloud handler's own filter sees the trace it has to format.
        handler.filters.insert(0, _TraceFilter())
        root.addHandler(handler)
        _configured = True
    logging.getLogger("messagine").setLevel(level)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    logging.getLogger("TeleBot").setLevel(logging.CRITICAL)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def trace_from_header(header: str | None, project_id: str | None) -> str | None:
    """The Cloud Logging trace name from an ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` header."""
    if not header or not project_id:
        return None
    trace_id = header.split("/", 1)[0].strip()
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project_id}/traces/{trace_id}"


def set_trace(trace: str | None) -> contextvars.Token[str | None]:
    """Make ``trace`` the trace of every record logged until ``reset_trace``."""
    return _trace.set(trace)


def reset_trace(token: contextvars.Token[str | None]) -> None:
    """Forget the request's trace."""
    _trace.reset(token)
