"""Usage analytics for Mixpanel, which never learns who a user is or what they wrote.

With no MIXPANEL_TOKEN nothing is sent and the mixpanel package is never imported. With
one, each event's distinct id is a pseudonym (an HMAC-SHA256 of the Telegram id under
ANALYTICS_PSEUDONYM_KEY, which Mixpanel never sees), properties are counts, durations,
languages and content types only, and a user who objected (/analytics off) is not tracked.
The events of one update are buffered and sent before the response in one request per
endpoint with a short timeout and no retries; a failure is logged once and forgotten, so
analytics can neither delay nor break a relay.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from messagine.models import UserState

log = logging.getLogger(__name__)

_TIMEOUT_S = 2


class Analytics(Protocol):
    """What the services report; implementations decide whether and where it goes."""

    def enabled_for(self, user: UserState) -> bool:
        """True when events about ``user`` are recorded (a token is set, no objection)."""
        ...

    def track(self, user: UserState, event: str, properties: Mapping[str, Any] | None = None
              ) -> None:
        """Record an event of ``user`` (buffered until ``flush``)."""
        ...

    def update_profile(self, user: UserState, *, set_once: Mapping[str, Any] | None = None,
                       set_values: Mapping[str, Any] | None = None,
                       increment: Mapping[str, int] | None = None) -> None:
        """Update ``user``'s people profile (buffered until ``flush``)."""
        ...

    def delete_profile(self, user_id: int) -> None:
        """Delete the people profile of ``user_id`` (buffered until ``flush``)."""
        ...

    def flush(self) -> None:
        """Send what this thread buffered for the current update; never raises."""
        ...


class NoAnalytics:
    """Analytics switched off: nothing is recorded or sent."""

    def enabled_for(self, user: UserState) -> bool:
        """Never."""
        return False

    def track(self, user: UserState, event: str, properties: Mapping[str, Any] | None = None
              ) -> None:
        """Nothing."""

    def update_profile(self, user: UserState, *, set_once: Mapping[str, Any] | None = None,
                       set_values: Mapping[str, Any] | None = None,
                       increment: Mapping[str, int] | None = None) -> None:
        """Nothing."""

    def delete_profile(self, user_id: int) -> None:
        """Nothing."""

    def flush(self) -> None:
        """Nothing."""


def pseudonym(key: str, user_id: int) -> str:
    """The distinct id Mixpanel sees for a Telegram id: a keyed hash, not reversible."""
    return hmac.new(key.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


class _Collector:
    """A mixpanel consumer that only collects, per thread; ``MixpanelAnalytics`` sends."""

    def __init__(self) -> None:
        self._local = threading.local()

    def send(self, endpoint: str, json_message: str, *_args: Any, **_kwargs: Any) -> None:
        self.pending().append((endpoint, json_message))

    def pending(self) -> list[tuple[str, str]]:
        buffer: list[tuple[str, str]] | None = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = []
            self._local.buffer = buffer
        return buffer

    def take(self) -> list[tuple[str, str]]:
        taken = self.pending()
        self._local.buffer = []
        return taken


class MixpanelAnalytics:
    """Events and profiles to Mixpanel under pseudonyms, one batch per endpoint per update."""

    def __init__(self, token: str, key: str, *, events_url: str | None = None,
                 people_url: str | None = None, gdpr_token: str | None = None,
                 deletion_url: str | None = None) -> None:
        self._gdpr_token = gdpr_token
        self._deletion_url = deletion_url or MIXPANEL_DELETION_URL
        self._token = token
        self._key = key
        self._events_url = events_url
        self._people_url = people_url
        self._collector = _Collector()
        self._client: Any = None
        self._sender: Any = None
        self._lock = threading.Lock()

    def _mixpanel(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import mixpanel  # noqa: PLC0415 - only deployments with a token pay for it

                    self._sender = mixpanel.Consumer(
                        events_url=self._events_url, people_url=self._people_url,
                        request_timeout=_TIMEOUT_S, retry_limit=0)
                    self._client = mixpanel.Mixpanel(self._token, consumer=self._collector)
        return self._client

    def enabled_for(self, user: UserState) -> bool:
        """True unless the user objected."""
        return not user.analytics_opt_out

    def track(self, user: UserState, event: str, properties: Mapping[str, Any] | None = None
              ) -> None:
        """Buffer an event under the user's pseudonym."""
        if self.enabled_for(user):
            self._mixpanel().track(pseudonym(self._key, user.user_id), event,
                                   dict(properties or {}))

    def update_profile(self, user: UserState, *, set_once: Mapping[str, Any] | None = None,
                       set_values: Mapping[str, Any] | None = None,
                       increment: Mapping[str, int] | None = None) -> None:
        """Buffer people updates under the user's pseudonym."""
        if not self.enabled_for(user):
            return
        client = self._mixpanel()
        distinct_id = pseudonym(self._key, user.user_id)
        if set_once:
            client.people_set_once(distinct_id, dict(set_once))
        if set_values:
            client.people_set(distinct_id, dict(set_values))
        if increment:
            client.people_increment(distinct_id, dict(increment))

    def delete_profile(self, user_id: int) -> None:
        """Drop what is buffered about the user and delete their profile and events.

        The profile's deletion is buffered with the update's batch; with a GDPR token the
        deletion of every event sent under the user's pseudonym is asked of Mixpanel's
        data-deletion API at once (before the update is answered).
        """
        distinct_id = pseudonym(self._key, user_id)
        pending = self._collector.pending()
        pending[:] = [(endpoint, message) for endpoint, message in pending
                      if distinct_id not in message]
        self._mixpanel().people_delete(distinct_id)
        if self._gdpr_token is not None:
            self._request_deletion(distinct_id)

    def _request_deletion(self, distinct_id: str) -> None:
        import requests  # noqa: PLC0415 - already loaded by the Bot API client

        try:
            response = requests.post(
                self._deletion_url, params={"token": self._token}, timeout=_TIMEOUT_S,
                headers={"Authorization": f"Bearer {self._gdpr_token}"},
                json={"distinct_ids": [distinct_id], "compliance_type": "GDPR"})
            response.raise_for_status()
        except Exception as error:  # noqa: BLE001 - analytics must never break an update
            log.warning("analytics: event deletion request failed (%s)", type(error).__name__)
            return
        log.info("analytics: deletion of a user's events requested")

    def flush(self) -> None:
        """Send this update's batch: one request per endpoint; a failure is logged once."""
        pending = self._collector.take()
        if not pending:
            return
        by_endpoint: dict[str, list[str]] = {}
        for endpoint, message in pending:
            by_endpoint.setdefault(endpoint, []).append(message)
        for endpoint, messages in by_endpoint.items():
            try:
                self._sender.send(endpoint, "[" + ",".join(messages) + "]")
            except Exception as error:  # noqa: BLE001 - analytics must never break an update
                log.warning("analytics: %d %s message(s) dropped (%s)", len(messages),
                            endpoint, type(error).__name__)


MIXPANEL_DELETION_URL = "https://mixpanel.com/api/app/data-deletions/v3.0/"
"""Mixpanel's GDPR data-deletion endpoint (the project token goes in the query)."""


def now_iso() -> str:
    """The current UTC time as Mixpanel's people profiles expect it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")

