"""The reminder rule as pure functions: who is due, who is skipped and why."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.erasure import banned_remnant
from messagine.domain.nudges import (
    SKIP_REASONS,
    NudgeStatus,
    activity,
    claimable,
    due,
    skip_reason,
)

statuses = st.builds(NudgeStatus, last_seen=st.floats(0, 2e9), nudge_pending=st.booleans(),
                     blocked=st.booleans(), banned=st.booleans(),
                     reminders_enabled=st.booleans())


def test_idle_since_before_the_cut_off_and_active_since_the_last_reminder_is_due():
    assert due(NudgeStatus(10.0, True, False, False, True), idle_before=11.0)
    assert not due(NudgeStatus(11.0, True, False, False, True), idle_before=11.0)
    assert not due(NudgeStatus(0.0, False, False, False, True), idle_before=11.0), \
        "one reminder per idle period"


def test_skip_reasons_in_order():
    assert skip_reason(NudgeStatus(0, True, True, True, False)) == "blocked"
    assert skip_reason(NudgeStatus(0, True, False, True, False)) == "banned"
    assert skip_reason(NudgeStatus(0, True, False, False, False)) == "opted_out"
    assert skip_reason(NudgeStatus(0, True, False, False, True)) is None


@given(status=statuses, idle_before=st.floats(0, 2e9))
def test_a_due_user_is_either_reminded_or_skipped_for_one_reason(status: NudgeStatus,
                                                                 idle_before: float):
    if due(status, idle_before):
        assert claimable(status, idle_before) != (skip_reason(status) in SKIP_REASONS)
    else:
        assert not claimable(status, idle_before)


def test_the_banned_remnant_is_never_due():
    assert not due(NudgeStatus.of(banned_remnant(0)), idle_before=1e12)


def test_activity():
    assert activity(in_chat=True, waiting=False) == "chatting"
    assert activity(in_chat=False, waiting=True) == "waiting"
    assert activity(in_chat=False, waiting=False) == "idle"
