"""The rating rule without a store: once per chat, counts only, one flag."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.ratings import RatingRule, RatingState, may_rate, rate

RULE = RatingRule(window_s=60.0, flag_after=3)

presses = st.lists(st.tuples(st.integers(min_value=-2**63, max_value=2**63 - 1),
                             st.booleans(),
                             st.floats(min_value=0.0, max_value=30.0, allow_nan=False)),
                   max_size=60)


@given(presses)
def test_counts_are_the_first_press_of_each_chat_and_the_flag_comes_once(
        steps: list[tuple[int, bool, float]]):
    state, now = RatingState(), 1_000.0
    first: dict[int, bool] = {}
    ended: dict[int, float] = {}
    flags = 0
    for chat, positive, gap in steps:
        now += gap
        # The chat ended at its first press at the latest; the service refuses a press
        # after the window (may_rate), so the rule never sees one.
        if not may_rate(ended.setdefault(chat, now), now, RULE):
            continue
        state, verdict = rate(state, chat, positive, now, RULE)
        assert verdict.counted == (chat not in first)
        first.setdefault(chat, positive)
        flags += verdict.flag
    assert state.up == sum(first.values()) and state.down == len(first) - sum(first.values())
    assert flags == (1 if state.down >= RULE.flag_after else 0) and state.flagged == bool(flags)
    last_write = max(state.recent.values(), default=now)
    assert all(last_write - at <= RULE.window_s for at in state.recent.values()), \
        "each write keeps only the chats counted within the window"


def test_a_chat_can_be_rated_only_after_it_ended_and_within_the_window():
    assert not may_rate(None, 100.0, RULE)
    assert may_rate(100.0, 100.0, RULE) and may_rate(100.0, 160.0, RULE)
    assert not may_rate(100.0, 160.5, RULE)
    assert not may_rate(100.0, 99.0, RULE), "an end in the future is no end"
