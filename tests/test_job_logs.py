"""The lines the metrics count that the services write: Telegram's webhook state on each
run of the job, and one line per failed Bot API call, with no content."""

from __future__ import annotations

import logging

import pytest

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.job import log_webhook_state
from messagine.runtime import Runtime
from messagine.telegram import TelegramRejected


def fields_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, object]]:
    return [r.json_fields for r in caplog.records  # type: ignore[attr-defined]
            if r.name == logger and hasattr(r, "json_fields")]


def test_the_job_logs_the_webhook_state(bot: Runtime, fake_api: FakeBotApi,
                                        caplog: pytest.LogCaptureFixture):
    fake_api.webhook.update({"url": "https://x.invalid/", "pending_update_count": 12,
                             "last_error_date": 1_000, "last_error_message": "Connection refused"})
    with caplog.at_level(logging.INFO, logger="messagine.job"):
        log_webhook_state(bot, now=1_090)
    assert fields_of(caplog, "messagine.job") == [{
        "webhook_pending_updates": 12, "webhook_last_error_age_s": 90,
        "webhook_last_error": "Connection refused"}]


def test_the_webhook_state_never_stops_the_job(bot: Runtime, fake_api: FakeBotApi,
                                               caplog: pytest.LogCaptureFixture):
    fake_api.fail("getWebhookInfo", status=502)
    with caplog.at_level(logging.INFO, logger="messagine.job"):
        log_webhook_state(bot)
    assert "getWebhookInfo failed with 502" in caplog.text
    assert fields_of(caplog, "messagine.job") == []


def test_a_failed_bot_api_call_is_one_line_with_method_and_code(
    bot: Runtime, fake_api: FakeBotApi, caplog: pytest.LogCaptureFixture
):
    fake_api.fail("sendMessage", status=400, description="Bad Request: the text quoted here")
    with caplog.at_level(logging.INFO, logger="messagine.telegram"), \
            pytest.raises(TelegramRejected):
        bot.telegram.send_text(5, "what the user should read")
    assert fields_of(caplog, "messagine.telegram") == [
        {"api_method": "sendMessage", "api_error_code": 400}]
    assert "quoted" not in caplog.text and "should read" not in caplog.text
