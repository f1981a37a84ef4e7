"""Cloud Functions entry points; everything is delegated to the messagine package."""

import flask
import functions_framework

from messagine import webhook as _webhook


@functions_framework.http
def webhook(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    """Telegram's webhook: one update per request."""
    return _webhook.handle(request)
