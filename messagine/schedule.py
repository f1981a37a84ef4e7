"""When an album is flushed: a Cloud Task on Google Cloud, an in-process timer elsewhere.

A Cloud Function gets no CPU after its response, so there the flush is a request of its
own: a Cloud Task named after the batch (so it is created once, however often the item
updates ask), run ``delay_s`` later against the function's URL with the webhook's secret
header, and retried by the queue while the answer is 503 (items still coming, another
flush busy, Telegram or the store unavailable). Wherever the bot runs in a process that
lives on (polling, ``serve``, the sandbox, functions-framework on a laptop), a timer
thread flushes instead, trying again the same way. google-cloud-tasks is imported only
when a task is first created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from messagine.albums import Flushed
from messagine.domain.albums import FIRST_FLUSH_S, FLUSH_ATTEMPTS, RETRIES, Retries
from messagine.storage.port import StorageUnavailable

log = logging.getLogger("messagine.schedule")

TASK_HEADER = "X-Messagine-Task"
"""The header that marks a request to the webhook as an album flush, not an update."""
ALBUM_TASK = "album-flush"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


_KEY_RE = re.compile(r"^-?[0-9]{1,20}--?[0-9]{1,20}-[0-9a-f]{16}$")


RETRY_COUNT_HEADER = "X-CloudTasks-TaskRetryCount"
"""How often Cloud Tasks tried this task before (0 on its first attempt)."""


def last_attempt(retry_count: str | None) -> bool:
    """Whether a task's attempt is the last the queue makes (its --max-attempts)."""
    return retry_count is not None and retry_count.isdigit() and \
        int(retry_count) + 1 >= FLUSH_ATTEMPTS


def flush_request(body: object) -> tuple[str, int] | None:
    """The (album key, batch number) a flush request names; None if it is not one."""
    if not isinstance(body, dict):
        return None
    key, number = body.get("album"), body.get("batch")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        return None
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 10**6:
        return None
    return key, number


class ScheduleUnavailable(StorageUnavailable):
    """The flush could not be scheduled (Cloud Tasks unreachable): retry the update.

    A kind of ``StorageUnavailable``: the queue holds the pending album's turn, and the
    pipeline answers 503 and releases the claim as for the store.
    """


class TimerSchedule:
    """Flushes in this process after ``delay_s``, then again as ``retries`` says while it must."""

    def __init__(self, flush: Callable[..., Flushed], delay_s: float = FIRST_FLUSH_S,
                 retries: Retries = RETRIES) -> None:
        self.flush = flush
        self.delay_s = delay_s
        self.retries = retries

    def __call__(self, key: str, number: int) -> None:
        """Flush batch ``number`` of album ``key`` soon."""
        self._arm(key, number, self.delay_s, 0)

    def _arm(self, key: str, number: int, delay_s: float, retry: int) -> None:
        timer = threading.Timer(delay_s, self._run, (key, number, retry))
        timer.daemon = True
        timer.start()

    def _run(self, key: str, number: int, retry: int) -> None:
        last = retry + 1 >= self.retries.attempts
        try:
            again = self.flush(key, number, last_attempt=last).retry
        except Exception:  # a timer thread has nobody to raise to
            log.exception("album flush failed")
            again = True
        if again and not last:
            self._arm(key, number, self.retries.delay(retry + 1), retry + 1)


class CloudTasksSchedule:
    """Creates one named Cloud Task per batch, targeting the function itself."""

    def __init__(self, queue: str, url: str, secret: str, delay_s: float = FIRST_FLUSH_S,
                 endpoint: str | None = None) -> None:
        self.queue = queue
        self.url = url
        self._secret = secret
        self.delay_s = delay_s
        self._endpoint = endpoint
        self._client: Any = None
        self._lock = threading.Lock()

    def _tasks(self) -> Any:
        """The client, made on first use: one per instance, reused."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from google.cloud import tasks_v2  # noqa: PLC0415 - only on this path

                    if self._endpoint is None:
                        self._client = tasks_v2.CloudTasksClient()
                    else:  # a test's fake: plain HTTP, no Google credentials
                        from google.auth.credentials import (  # noqa: PLC0415
                            AnonymousCredentials,
                        )

                        self._client = tasks_v2.CloudTasksClient(
                            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                            transport="rest",
                            client_options={"api_endpoint": self._endpoint})
        return self._client

    def task_name(self, key: str, number: int) -> str:
        """The batch's task name: a hashed prefix spreads names, as Cloud Tasks advises."""
        prefix = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
        return f"{self.queue}/tasks/{prefix}-album-{key}-{number}"

    def __call__(self, key: str, number: int) -> None:
        """Create the batch's task (once: a second create finds it and changes nothing)."""
        from google.api_core import exceptions as gexc  # noqa: PLC0415
        task = {
            "name": self.task_name(key, number),
            "schedule_time": datetime.fromtimestamp(time.time() + self.delay_s, UTC),
            "http_request": {
                "http_method": "POST", "url": self.url,
                "headers": {"Content-Type": "application/json", TASK_HEADER: ALBUM_TASK,
                            SECRET_HEADER: self._secret},
                "body": json.dumps({"album": key, "batch": number}).encode(),
            },
        }
        try:
            self._tasks().create_task(parent=self.queue, task=task, timeout=5.0)
        except gexc.Conflict as error:
            # ALREADY_EXISTS (409 over REST): this batch's flush is scheduled already.
            if isinstance(error, gexc.Aborted):
                raise ScheduleUnavailable("cloud tasks: Aborted") from None
        except (gexc.GoogleAPIError, OSError) as error:
            log.warning("album flush not scheduled: %s", type(error).__name__)
            raise ScheduleUnavailable(f"cloud tasks: {type(error).__name__}") from None
