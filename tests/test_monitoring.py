"""The Cloud Console definitions in messagine/ops/: parsed by Google's own client types.

A wrong field fails here, not at deploy time; the definitions are consistent with each
other and with the docs, and free of anything that would identify a user."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.cloud import monitoring_dashboard_v1, monitoring_v3
from google.cloud.logging_v2.types import LogMetric

from conftest import ROOT
from support import log_filter

OPS = ROOT / "messagine" / "ops"
CHANNEL = "projects/demo-project/notificationChannels/123"


def rendered(path: Path) -> str:
    """A definition as messagine/ops/apply.sh renders it for the function "messagine"."""
    return path.read_text().replace("__FUNCTION__", "messagine").replace(
        '"__CHANNEL__"', json.dumps(CHANNEL))


METRICS = sorted((OPS / "metrics").glob("*.json"))
ALERTS = sorted((OPS / "alerts").glob("*.json"))
DASHBOARD = json.loads(rendered(OPS / "dashboard.json"))
# What a metric may be broken down by: never a user, a chat or anything a user sent.
ALLOWED_LABEL_FIELDS = {"jsonPayload.kind", "jsonPayload.outcome", "jsonPayload.status",
                        "jsonPayload.content_type", "jsonPayload.chat_end_reason",
                        "jsonPayload.api_method", "jsonPayload.api_error_code"}


def user_metric_types(text: str) -> set[str]:
    return set(re.findall(r'logging\.googleapis\.com/user/([\w/]+)', text))


@pytest.mark.parametrize("path", METRICS, ids=lambda p: p.stem)
def test_each_metric_is_a_valid_log_metric_named_after_its_file(path: Path):
    metric = LogMetric.from_json(rendered(path))
    assert metric.name == f"messagine/{path.stem}"
    assert metric.description and metric.filter
    assert 'resource.labels.service_name' in metric.filter, "one deployment's logs only"
    declared = {label.key for label in metric.metric_descriptor.labels}
    assert declared == set(metric.label_extractors), "every label has an extractor"
    used = {log_filter.extractor_field(e) for e in metric.label_extractors.values()}
    assert used <= ALLOWED_LABEL_FIELDS, "no user id and no content in a metric label"
    if metric.metric_descriptor.value_type == metric.metric_descriptor.ValueType.DISTRIBUTION:
        assert metric.value_extractor and metric.bucket_options.exponential_buckets.scale > 0


def test_a_wrong_field_is_refused_by_the_client_types():
    # The check above is only worth something if the types reject what they do not know.
    bad = rendered(METRICS[0]).replace('"labelExtractors"', '"labelExtractor"')
    with pytest.raises(Exception, match="labelExtractor"):
        LogMetric.from_json(bad)
    with pytest.raises(Exception, match="xyChar"):
        monitoring_dashboard_v1.Dashboard.from_json(
            json.dumps(DASHBOARD).replace('"xyChart"', '"xyChar"', 1))
    with pytest.raises(Exception, match="conditionThresold"):
        monitoring_v3.AlertPolicy.from_json(
            rendered(ALERTS[0]).replace('"conditionThreshold"', '"conditionThresold"')
            if '"conditionThreshold"' in rendered(ALERTS[0]) else
            rendered(ALERTS[0]).replace('"combiner"', '"conditionThresold"'))


def test_the_dashboard_is_valid_and_charts_every_metric_and_the_function_itself():
    dashboard = monitoring_dashboard_v1.Dashboard.from_json(json.dumps(DASHBOARD))
    assert dashboard.display_name == "Messagine (messagine)"
    filters = [data_set["timeSeriesQuery"]["timeSeriesFilter"]["filter"]
               for tile in DASHBOARD["mosaicLayout"]["tiles"]
               for data_set in tile["widget"]["xyChart"]["dataSets"]]
    assert user_metric_types(" ".join(filters)) == {f"messagine/{p.stem}" for p in METRICS} - {
        "messagine/reminder_runs"}, "every metric but the alert-only one is charted"
    run_filters = [f for f in filters if "run.googleapis.com/" in f]
    for run_metric in ("request_count", "request_latencies", "container/instance_count",
                       "container/memory/utilizations"):
        assert any(f'run.googleapis.com/{run_metric}"' in f for f in run_filters), run_metric
    assert all('resource.label."service_name"="messagine"' in f for f in run_filters)


@pytest.mark.parametrize("path", ALERTS, ids=lambda p: p.stem)
def test_each_alert_is_a_valid_policy_with_the_channel_and_a_runbook(path: Path):
    policy = monitoring_v3.AlertPolicy.from_json(rendered(path))
    assert list(policy.notification_channels) == [CHANNEL]
    assert policy.display_name.startswith("Messagine (messagine): ")
    assert "docs/operations.md" in policy.documentation.content
    assert user_metric_types(rendered(path)) <= {f"messagine/{p.stem}" for p in METRICS}
    without_channel = path.read_text().replace("__FUNCTION__", "messagine").replace(
        '"__CHANNEL__"', "")
    assert list(monitoring_v3.AlertPolicy.from_json(without_channel).notification_channels) \
        == []


def test_the_alerts_cover_503s_errors_the_job_and_pending_updates():
    policies = {p.stem: monitoring_v3.AlertPolicy.from_json(rendered(p)) for p in ALERTS}
    retries = policies["retries"].conditions[0].condition_threshold
    assert 'metric.label.status="503"' in retries.filter and retries.denominator_filter
    assert "severity>=ERROR" in policies["errors"].conditions[0].condition_matched_log.filter
    assert policies["errors"].alert_strategy.notification_rate_limit.period
    assert "reminder_runs" in policies["reminders"].conditions[0].condition_absent.filter
    pending = policies["pending-updates"].conditions[0].condition_threshold
    assert "webhook_pending_updates" in pending.filter


def test_operations_doc_explains_every_chart_and_alert():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for tile in DASHBOARD["mosaicLayout"]["tiles"]:
        assert tile["widget"]["title"] in doc, tile["widget"]["title"]
    for path in ALERTS:
        name = json.loads(path.read_text())["displayName"].split(": ", 1)[1]
        assert name in doc, name


def test_the_filter_subset_refuses_what_it_cannot_check():
    with pytest.raises(ValueError, match="OR"):
        log_filter.matches('jsonPayload.a="1" OR jsonPayload.b="2"', {})
    with pytest.raises(ValueError, match="unsupported"):
        log_filter.matches('jsonPayload.a!="1"', {})
    line: dict[str, Any] = {"severity": "INFO", "status": 503, "outcome": "retry:storage",
                            "logging.googleapis.com/labels": {"python_logger": "x"}}
    entry = log_filter.entry(line)
    assert log_filter.matches('labels.python_logger="x" AND severity>=INFO AND '
                              'jsonPayload.status=503 AND jsonPayload.outcome=~"^retry:"', entry)
    assert not log_filter.matches("jsonPayload.status=200", entry)
    assert not log_filter.matches("jsonPayload.kind:*", entry)
    assert log_filter.extract('REGEXP_EXTRACT(jsonPayload.outcome, "^retry:([a-z_]+)")',
                              entry) == "storage"
