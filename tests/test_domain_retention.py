"""The retention rules (idle chats, the inactivity notice and erasure), without a store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.retention import (
    DAY,
    HOUR,
    AccountStatus,
    chat_idle,
    cutoffs,
    erasure_due,
    notice_due,
    outlives_period,
)
from messagine.models import Periods

NOW = 2_000_000_000.0
PERIODS = Periods(idle_chat_hours=72, inactive_days=30, notice_days=7)
CUT = cutoffs(NOW, PERIODS)
times = st.floats(0, NOW)


def status(last_seen: float, *, pending: bool = True, noticed_at: float | None = None,
           banned: bool = False, refused: bool = False) -> AccountStatus:
    return AccountStatus(last_seen, pending, noticed_at, banned, refused)


@given(a=times, b=times)
def test_a_chat_is_idle_only_when_neither_wrote_for_the_period(a: float, b: float):
    assert chat_idle((a, b), CUT.active_before) == (
        a < NOW - 72 * HOUR and b < NOW - 72 * HOUR)


def test_the_notice_comes_the_notice_period_before_erasure_and_once():
    assert not notice_due(status(NOW - 22 * DAY), CUT)
    assert notice_due(status(NOW - 24 * DAY), CUT)
    assert not notice_due(status(NOW - 24 * DAY, pending=False, noticed_at=NOW - DAY), CUT)


@given(away=st.floats(0, 400 * DAY), told=st.floats(0, 400 * DAY))
def test_erasure_needs_the_notice_that_long_ago_and_no_return(away: float, told: float):
    noticed = status(NOW - away, pending=False, noticed_at=NOW - told)
    assert erasure_due(noticed, CUT) == (
        NOW - told < NOW - 7 * DAY and NOW - away < NOW - 30 * DAY)
    assert not erasure_due(status(NOW - away, noticed_at=NOW - told), CUT), "came back"
    assert not erasure_due(status(NOW - away, pending=False), CUT), "never told"


@given(away=st.floats(0, 400 * DAY), banned=st.booleans())
def test_bans_and_age_refusals_have_rules_of_their_own(away: float, banned: bool):
    kept = status(NOW - away, banned=banned, refused=not banned)
    assert not notice_due(kept, CUT)
    assert not erasure_due(AccountStatus(NOW - away, False, 0.0, banned, not banned), CUT)


def test_only_a_report_holding_a_ban_outlives_its_period():
    assert outlives_period(True)
    assert not outlives_period(False) and not outlives_period(None)
