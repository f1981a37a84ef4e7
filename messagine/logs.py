"""Logging: structured JSON for Cloud Logging on Google Cloud, one readable line locally.

On Google Cloud (K_SERVICE or FUNCTION_TARGET set) records go through google-cloud-logging's
StructuredLogHandler to stdout, one JSON object per line, which Cloud Logging ingests with
severity, labels and trace. No logging Client and no setup_logging(): off Google Cloud they
probe the metadata server, and in a function they ship logs from background threads that
get no CPU after the response. google-cloud-logging is imported only on that path, and
only what the handler needs: the package ``google.cloud.logging_v2`` and its ``handlers``
package are entered without running their ``__init__`` (which imports the API client, its
gRPC and REST transports and every handler class: half of the import's cost on the first
request); each runs the first time a name it defines is used, so the rest of the library
still works, later. pyTelegramBotAPI logs request parameters (message text) at DEBUG, so
its logger is held at CRITICAL whatever our level.

A record with an exception is written for Error Reporting: ``stack_trace`` holds the
traceback with the exception's type but not its message (which may quote content),
``serviceContext`` names the service and revision, and ``@type`` marks it as an error
event, so Error Reporting groups it by type and frames; the ``message`` stays one line.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import logging
import os
import sys
import threading
import traceback
import types
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


class _DeferredPackage(types.ModuleType):
    """A package entered without running its ``__init__``, which runs on first real use.

    Its submodules import as usual (``__path__`` is set); any other name it does not have
    yet runs the package's own ``__init__`` in this module, once, and is then looked up.
    """

    # Re-entrant: one package's __init__ may use another deferred one.
    _lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        submodule = f"{self.__name__}.{name}"
        if submodule in sys.modules or importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)
        with _DeferredPackage._lock:
            if isinstance(self, _DeferredPackage):
                spec = self.__spec__
                assert spec is not None and spec.loader is not None  # noqa: S101 - _defer_package sets both
                self.__class__ = types.ModuleType  # type: ignore[assignment] # plain from now on
                spec.loader.exec_module(self)
        return getattr(self, name)


def _defer_package(name: str, **attributes: Any) -> None:
    """Register package ``name`` so that importing its submodules skips its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not a package here: the ordinary import will say what is wrong
    package = _DeferredPackage(name)
    package.__spec__ = spec
    package.__loader__ = spec.loader
    package.__file__ = spec.origin
    package.__package__ = name
    package.__path__ = list(spec.submodule_search_locations)
    for key, value in attributes.items():
        setattr(package, key, value)
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, package)


def _structured_handler_class() -> Any:
    """google-cloud-logging's StructuredLogHandler, importing only what it needs."""
    if "google.cloud.logging_v2" not in sys.modules:
        import google.cloud  # noqa: PLC0415 - the namespace package the library lives in

        del google
        _defer_package("google.cloud.logging_v2", _instrumentation_emitted=False)
        from google.cloud.logging_v2 import gapic_version  # noqa: PLC0415

        # Read by the handler's first record (the library's own diagnostic line).
        package: Any = sys.modules["google.cloud.logging_v2"]
        package.__version__ = gapic_version.__version__
        _defer_package("google.cloud.logging_v2.handlers")
    from google.cloud.logging_v2.handlers.structured_log import (  # noqa: PLC0415
        StructuredLogHandler,
    )

    return StructuredLogHandler


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
            handler = _structured_handler_class()(stream=sys.stdout, project_id=project_id)
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
