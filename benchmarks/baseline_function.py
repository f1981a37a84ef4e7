"""The baseline of the relay benchmark: one fake Bot API call per request and nothing else."""

import os

import functions_framework
import requests

_session = requests.Session()


@functions_framework.http
def baseline(request: object) -> str:
    """Make the one Bot API call a relay makes, without any of the bot's work."""
    url = f"{os.environ['TELEGRAM_API_URL']}/bot{os.environ['TELEGRAM_TOKEN']}/getMe"
    _session.post(url, timeout=10)
    return "ok"
