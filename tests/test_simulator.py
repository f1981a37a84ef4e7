"""The delivery simulator on every backend: Telegram's rules, several instances, faults.

Small sizes here (CI); benchmarks/simulate.py runs the same at benchmark size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BACKENDS, SECRET, store_of
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.dev.simulator import Faults, Load, Simulation
from support.simulated_backends import SimulatedStore

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ENV = {"WEBHOOK_SECRET": SECRET, "MIN_AGE": "0", "FLOOD_LIMIT": "10000",
       "RECENT_PARTNERS": "0", "TELEGRAM_TIMEOUT_SECONDS": "2", "LOG_FORMAT": "text",
       "LOG_LEVEL": "WARNING", "REQUEST_TIMEOUT_SECONDS": "10"}
# A 10 s request timeout: a killed worker's claim blocks its update for 20 s, not 60 s
# (attempts here last seconds: 2 s Bot API timeout, 429s of 1 s, 3 s storage outages).
LOAD = Load(users=24, messages_per_user=5, rounds=2)
QUICK = Load(users=16, messages_per_user=3, rounds=2)
FAULTS = Faults(api_5xx=0.05, api_429=0.02, api_timeout=0.01, api_403=0.01,
                kill_every_s=4.0, storage_outages=1, outage_s=3.0)
# Smaller than LOAD, and a kill every 2-6 s: each kill holds its updates for a claim's
# lease, so a run's length follows its kills more than its texts (sqlite ~15 s, mongo
# ~45 s, firestore ~100 s here; a kill every 1-3 s on 240 texts took 55/134/100 s).
FAULTS_LOAD = Load(users=16, messages_per_user=4, rounds=2)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimulatedStore]:
    """Each backend's simulated store, from its registry entry's test store."""
    with store_of(request, request.param).simulated(tmp_path) as simulated:
        yield simulated


# Re-delivery while a slow attempt still runs: Telegram gives up after 1.5 s while a
# third of the copies take 2.5 s (the bot's own Bot API timeout, 5 s, is longer: the copy
# is made), and some calls get 429s meanwhile.
SLOW = Faults(slow_copies=0.3, slow_s=2.5, api_429=0.05)
SLOW_LOAD = Load(users=12, messages_per_user=3, rounds=2, delivery_timeout_s=1.5)
SLOW_ENV = {"TELEGRAM_TIMEOUT_SECONDS": "5"}
# Chats ending while copies are delayed: in most pairs one user leaves between their
# texts while copies to them are held back by 429s.
LEAVING = Faults(leavers=0.75, held_copies=0.5)
LEAVING_LOAD = Load(users=16, messages_per_user=4, rounds=2)


def simulate(store: SimulatedStore, tmp_path: Path, faults: Faults,
             load: Load = LOAD, env: dict[str, str] | None = None) -> Simulation:
    api = FakeBotApi()
    api.start()
    simulation = Simulation(api, {**ENV, **store.env, **(env or {})}, load, faults,
                            store.read_state, tmp_path, storage_down=store.storage_down,
                            storage_up=store.storage_up, read_records=store.export_user)
    with contextlib.closing(_Stopper(api)):
        simulation.run()
    return simulation


class _Stopper:
    def __init__(self, api: FakeBotApi) -> None:
        self.api = api

    def close(self) -> None:
        self.api.stop()


def test_every_text_arrives_once_and_in_order(store: SimulatedStore, tmp_path: Path):
    report = simulate(store, tmp_path, Faults(), QUICK).report
    assert report.ok, report.summary()
    assert report.texts_sent > 0 and report.texts_delivered_once == report.texts_sent
    assert report.pairs_made == QUICK.users  # 8 pairs a round, 2 rounds
    # Albums among the texts: each arrived once, whole, in order, as one album.
    assert report.albums_sent > 0 and report.albums_whole == report.albums_sent, \
        report.summary()
    # No fault, no error answer (a kept-alive connection the server closed while idle
    # can still be refused, and is re-delivered like any broken connection). On mongoeco,
    # an emulation at ~10 ms a write, a search that waits over 8 s for its language's
    # lease answers 503 and is re-delivered; and on a loaded machine an album's next item
    # may be answered more than the album's quiet time (2 s) after the one before, so the
    # album goes whole, as two (by design: a flush that has begun takes no more items).
    emulated = "MONGODB_URI" in store.env
    assert emulated or not report.albums_split, report.summary()
    allowed = {"200", "connection_error"} | ({"503"} if emulated else set())
    assert set(report.answers) <= allowed, report.summary()


def test_faults_lose_and_double_nothing(store: SimulatedStore, tmp_path: Path):
    simulation = simulate(store, tmp_path, FAULTS, FAULTS_LOAD)
    report = simulation.report
    assert report.ok, report.summary()
    assert report.texts_sent == (report.texts_delivered_once + report.texts_cut_by_403
                                 + len(report.duplicates_in_send_record_window)), \
        report.summary()
    assert report.albums_sent > 0 and report.albums_sent == (
        report.albums_whole + report.albums_not_delivered_told
        + report.albums_doubled_by_a_kill), report.summary()
    # The faults did happen, and were answered so that Telegram re-delivered.
    assert report.kills and report.outages == 1, report.summary()
    assert report.attempts > report.updates
    assert report.answers["503"] > 0, report.summary()
    failed = [c for c in simulation.api.calls if c.status in (429, 502, 500)]
    assert failed, "the fake Bot API failed some calls"


def test_redelivery_during_a_slow_attempt_doubles_nothing(store: SimulatedStore,
                                                          tmp_path: Path):
    report = simulate(store, tmp_path, SLOW, SLOW_LOAD, SLOW_ENV).report
    # The condition happened: slow copies, and Telegram gave up on their requests.
    assert report.copies_slowed > 0 and report.answers["timeout"] > 0, report.summary()
    assert not report.doubled, report.summary()
    # A copy orphaned by the re-delivery can land after the round moved on: in a later chat.
    assert not report.texts_lost and not report.misrouted, report.summary()
    assert report.ok, report.summary()


def test_chats_ending_while_copies_wait_misroute_nothing(store: SimulatedStore,
                                                         tmp_path: Path):
    report = simulate(store, tmp_path, LEAVING, LEAVING_LOAD).report
    # The condition happened: users left mid-chat while copies to them were held back,
    # and some of their partners' texts reached nobody because of it.
    assert report.left_mid_chat > 0 and report.copies_held > 0, report.summary()
    assert report.not_delivered_told, report.summary()
    assert not report.texts_lost and not report.misrouted and not report.doubled, \
        report.summary()
    assert report.ok, report.summary()
    assert report.texts_sent == (report.texts_delivered_once
                                 + len(report.not_delivered_told)), report.summary()
