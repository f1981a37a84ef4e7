"""Cloud Functions entry points; everything is delegated to the messagine package."""

import flask
import functions_framework

from messagine import job as _job
from messagine import webhook as _webhook


@functions_framework.http
def webhook(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    """Telegram's webhook: one update per request."""
    return _webhook.handle(request)


@functions_framework.http
def reminders(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    """The scheduled reminders job (Cloud Scheduler, every few minutes)."""
    return _job.handle(request)
