"""The claim rule (messagine.domain.claims) as a pure function: new, done, busy, taken over."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.claims import (
    LEASE_S,
    REQUEST_TIMEOUT_S,
    Claim,
    ClaimState,
    Decision,
    budget_for,
    decide,
    lease_for,
)

times = st.floats(0, 2e9, allow_nan=False)


@given(now=times, lease=st.floats(1, 3600))
def test_a_new_update_is_claimed_in_progress_by_its_attempt(now: float, lease: float):
    decision, claim = decide(None, 7, "me", now, lease)
    assert decision is Decision.NEW and decision.proceeds
    assert claim == Claim(7, ClaimState.IN_PROGRESS, "me", now + lease, 1)


@given(now=times)
def test_a_done_update_is_never_processed_again(now: float):
    done = Claim(7, ClaimState.DONE, "first", 0.0)
    assert decide(done, 7, "me", now) == (Decision.DONE, None)


@given(start=times, elapsed=st.floats(0, 3600), lease=st.floats(1, 3600))
def test_a_live_lease_is_busy_and_an_expired_one_is_taken_over_once(
        start: float, elapsed: float, lease: float):
    held = Claim(7, ClaimState.IN_PROGRESS, "first", start + lease, 2)
    decision, claim = decide(held, 7, "me", start + elapsed, lease)
    if held.lease_until > start + elapsed:  # as stored, rounding included
        assert (decision, claim) == (Decision.BUSY, None) and not decision.proceeds
    else:
        assert decision is Decision.TAKE_OVER and decision.proceeds
        assert claim == Claim(7, ClaimState.IN_PROGRESS, "me", start + elapsed + lease, 3)


@given(timeout=st.floats(5, 540))
def test_the_lease_outlives_the_request_and_the_429_budget_fits_inside_it(timeout: float):
    assert lease_for(timeout) > timeout > budget_for(timeout) > 0
    assert lease_for(REQUEST_TIMEOUT_S) == LEASE_S == 60.0  # Telegram waits 60 s
