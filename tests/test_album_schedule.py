"""The album flush's schedule and its request: settings, parsing, the in-process timer."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messagine.albums import Flushed
from messagine.dev.fake_cloud_tasks import FakeCloudTasks
from messagine.domain.albums import FLUSH_ATTEMPTS, Retries, album_key
from messagine.schedule import (
    CloudTasksSchedule,
    ScheduleUnavailable,
    TimerSchedule,
    flush_request,
    last_attempt,
)
from messagine.settings import Settings, SettingsError

TOKEN = {"TELEGRAM_TOKEN": "424242:AAH-some_token_value_0123456789abcd"}
QUEUE = "projects/demo-1/locations/europe-west1/queues/albums"


def test_a_queue_needs_the_functions_url_and_both_must_be_well_formed():
    settings = Settings.from_env({**TOKEN, "ALBUM_QUEUE": QUEUE,
                                  "ALBUM_FLUSH_URL": "https://f.example/webhook"})
    assert settings.album_queue == QUEUE
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**TOKEN, "ALBUM_QUEUE": "albums"})
    assert any("ALBUM_QUEUE must be" in p for p in raised.value.problems)
    assert any("ALBUM_FLUSH_URL must be set" in p for p in raised.value.problems)
    with pytest.raises(SettingsError):
        Settings.from_env({**TOKEN, "ALBUM_QUEUE": QUEUE, "ALBUM_FLUSH_URL": "ftp://x"})
    assert Settings.from_env(TOKEN).album_queue is None  # a timer flushes then


def test_a_flush_request_names_a_key_and_a_batch():
    key = album_key(12, 34, "987654321")
    assert flush_request({"album": key, "batch": 2}) == (key, 2)
    assert flush_request({"album": key, "batch": True}) is None
    assert flush_request({"album": key, "batch": 0}) is None
    assert flush_request({"album": "../" + key, "batch": 1}) is None
    assert flush_request([key, 1]) is None


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=8))
def test_any_json_is_a_flush_request_or_none_never_an_error(body: object):
    named = flush_request(body)
    assert named is None or (isinstance(named[0], str) and named[1] >= 1)


def test_task_names_are_per_batch_and_inside_the_queue():
    schedule = CloudTasksSchedule(QUEUE, "https://f.example/", "secret")
    key = album_key(1, 2, "g")
    first, second = schedule.task_name(key, 1), schedule.task_name(key, 2)
    assert first != second and first.startswith(QUEUE + "/tasks/")
    assert schedule.task_name(key, 1) == first


def test_the_timer_tries_again_while_the_flush_must_wait_then_stops():
    runs: list[tuple[str, int]] = []
    done = threading.Event()

    def flush(key: str, number: int, *, last_attempt: bool) -> Flushed:
        runs.append((key, number))
        assert not last_attempt
        if len(runs) < 3:
            return Flushed("album:wait", retry=True)
        done.set()
        return Flushed("album:sent")

    TimerSchedule(flush, delay_s=0.05, retries=Retries(FLUSH_ATTEMPTS, 0.05, 0.05, 0))("k", 1)
    assert done.wait(5)
    time.sleep(0.3)
    assert runs == [("k", 1)] * 3


def test_the_timers_last_attempt_is_told_so_and_the_queue_makes_as_many():
    lasts: list[bool] = []
    done = threading.Event()

    def flush(key: str, number: int, *, last_attempt: bool) -> Flushed:
        lasts.append(last_attempt)
        if last_attempt:
            done.set()
        return Flushed("retry:telegram", retry=True)

    TimerSchedule(flush, delay_s=0.01, retries=Retries(4, 0.01, 0.01, 0))("k", 1)
    assert done.wait(5)
    time.sleep(0.1)
    assert lasts == [False, False, False, True], "then it stops"
    assert [last_attempt(str(n)) for n in range(FLUSH_ATTEMPTS)] == \
        [False] * (FLUSH_ATTEMPTS - 1) + [True]
    assert not last_attempt(None) and not last_attempt("x")


def test_a_second_create_of_a_batchs_task_finds_it_and_changes_nothing():
    """ALREADY_EXISTS (409 over REST): two item updates asked for the same batch's flush."""
    tasks = FakeCloudTasks()
    try:
        schedule = CloudTasksSchedule(QUEUE, "http://127.0.0.1:9/", "secret", delay_s=3600,
                                      endpoint=tasks.url)
        key = album_key(1, 2, "g")
        schedule(key, 1)
        schedule(key, 1)  # no error: the flush is scheduled already
        assert tasks.creates == 2 and list(tasks.tasks) == [schedule.task_name(key, 1)]
        tasks.fail_creates = 1
        with pytest.raises(ScheduleUnavailable):  # unreachable: the update is retried
            schedule(key, 2)
    finally:
        tasks.stop()
