"""The subset of the Cloud Logging query language that messagine/ops/metrics uses, applied to
the JSON lines the bot writes on stdout, so that a metric's filter and extractors are checked
against what the bot really logs.

A line becomes a LogEntry as Cloud Logging ingests it: ``severity`` from its severity,
``labels.K`` from ``logging.googleapis.com/labels``, ``jsonPayload.K`` from every other
field. ``resource.*`` comes from the platform, not from the line: those terms hold.
Supported: terms joined by AND, with ``=``, ``>=``, ``<=``, ``=~`` (a regular expression)
and ``:*`` (present); values quoted or numeric. Anything else raises, so a filter written
beyond this subset fails its test rather than passing unchecked.
"""

from __future__ import annotations

import json
import re
from typing import Any

SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT",
              "EMERGENCY"]
_TERM = re.compile(r'^([A-Za-z_.]+)\s*(=~|>=|<=|=|:)\s*(\*|"(?:[^"\\]|\\.)*"|[\w.-]+)$')
_MISSING = object()
# Fields of a line that become LogEntry fields rather than jsonPayload ones.
_SPECIAL = {"severity", "httpRequest", "time", "timestamp", "timestampSeconds",
            "timestampNanos"}


def entry(line: dict[str, Any]) -> dict[str, Any]:
    """The LogEntry fields a stdout JSON line becomes."""
    payload = {k: v for k, v in line.items()
               if k not in _SPECIAL and not k.startswith("logging.googleapis.com/")}
    return {"severity": line.get("severity", "DEFAULT"), "jsonPayload": payload,
            "labels": line.get("logging.googleapis.com/labels", {})}


def lookup(log_entry: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of an entry, or ``_MISSING``."""
    value: Any = log_entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def fields(filter_text: str) -> list[str]:
    """The dotted field paths a filter names, outside ``resource.*``."""
    return [m.group(1) for term in terms(filter_text)
            if not (m := _parse(term)).group(1).startswith("resource.")]


def terms(filter_text: str) -> list[str]:
    """The filter's terms (only AND is supported)."""
    if re.search(r"\b(OR|NOT)\b", filter_text):
        raise ValueError(f"OR and NOT are not supported here: {filter_text}")
    return [t.strip() for t in filter_text.split(" AND ")]


def _parse(term: str) -> re.Match[str]:
    match = _TERM.match(term)
    if match is None:
        raise ValueError(f"unsupported term: {term}")
    return match


def matches(filter_text: str, log_entry: dict[str, Any]) -> bool:
    """Whether the entry passes the filter."""
    return all(_holds(_parse(term), log_entry) for term in terms(filter_text))


def _holds(term: re.Match[str], log_entry: dict[str, Any]) -> bool:
    path, operator, raw = term.groups()
    if path.startswith("resource."):
        return True
    value = lookup(log_entry, path)
    if value is _MISSING or value is None:
        return False
    if operator == ":":
        if raw != "*":
            raise ValueError(f"only ':*' is supported: {term.group(0)}")
        return True
    wanted = json.loads(raw) if raw.startswith('"') else raw
    if operator == "=~":
        return re.search(str(wanted), str(value)) is not None
    if path == "severity":
        order = SEVERITIES.index
        return {"=": order(value) == order(wanted), ">=": order(value) >= order(wanted),
                "<=": order(value) <= order(wanted)}[operator]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return operator == "=" and str(value) == str(wanted)
    number = float(wanted)
    return {"=": value == number, ">=": value >= number, "<=": value <= number}[operator]


def extract(extractor: str, log_entry: dict[str, Any]) -> Any:
    """The value of ``EXTRACT(path)`` or ``REGEXP_EXTRACT(path, "re")``; None if none."""
    match = re.fullmatch(r'EXTRACT\(([\w.]+)\)', extractor)
    if match:
        value = lookup(log_entry, match.group(1))
        return None if value is _MISSING else value
    match = re.fullmatch(r'REGEXP_EXTRACT\(([\w.]+),\s*("(?:[^"\\]|\\.)*")\)', extractor)
    if match is None:
        raise ValueError(f"unsupported extractor: {extractor}")
    value = lookup(log_entry, match.group(1))
    if value is _MISSING:
        return None
    found = re.search(json.loads(match.group(2)), str(value))
    return found.group(1) if found else None


def extractor_field(extractor: str) -> str:
    """The field path an extractor reads."""
    match = re.match(r'(?:REGEXP_)?EXTRACT\(([\w.]+)', extractor)
    if match is None:
        raise ValueError(f"unsupported extractor: {extractor}")
    return match.group(1)


def metric_definitions(root: Any, function: str = "messagine") -> list[dict[str, Any]]:
    """messagine/ops/metrics/*.json as the build renders them for ``function``."""
    return [json.loads(path.read_text().replace("__FUNCTION__", function))
            for path in sorted((root / "messagine" / "ops" / "metrics").glob("*.json"))]
