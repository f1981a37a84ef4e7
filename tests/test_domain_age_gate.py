"""The age gate's rule and its marker, without a store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain import age_gate, matching
from messagine.domain.age_gate import Gate, gate, refusal_marker
from messagine.domain.nudges import NudgeStatus, claimable
from messagine.models import ActiveChat, MatchOutcome, UserState

CHAT = ActiveChat(1, 2, "en", 0.0)


def user(*, confirmed: bool = False, refused: bool = False,
         chat: ActiveChat | None = None) -> UserState:
    return UserState(user_id=1, language="en", is_new=False, blocked=False, banned=False,
                     chat=chat, waiting_since=None, age_confirmed=confirmed,
                     age_refused=refused)


@given(min_age=st.sampled_from([0, 13, 16, 21]), in_chat=st.booleans())
def test_a_refusal_closes_the_gate_whatever_the_setting_or_state(min_age: int, in_chat: bool):
    assert gate(user(refused=True, chat=CHAT if in_chat else None), min_age) is Gate.CLOSED


def test_the_question_comes_first_once_and_never_mid_chat():
    assert gate(user(), 16) is Gate.ASK
    assert gate(user(confirmed=True), 16) is Gate.OPEN
    assert gate(user(chat=CHAT), 16) is Gate.OPEN, "in a chat from before the question"
    assert gate(user(), 0) is Gate.OPEN, "MIN_AGE 0 asks nothing"


@given(user_id=st.integers(1, 2**62), at=st.floats(0, 2e9))
def test_the_marker_is_the_answer_and_nothing_about_the_person(user_id: int, at: float):
    marker = refusal_marker(user_id, at)
    assert (marker.user_id, marker.age_answer, marker.age_answered_at) == (user_id, "no", at)
    assert (marker.first_name, marker.last_name, marker.username, marker.language_code,
            marker.language) == ("", None, None, None, "")
    assert marker.analytics_opt_out, "no analytics about a child"
    assert (marker.first_seen, marker.last_seen, marker.lobby) == (0.0, 0.0, None)
    assert not claimable(NudgeStatus.of(marker), float("inf")), "no reminder, ever"


def test_a_yes_never_replaces_a_no_and_a_no_replaces_anything():
    assert not age_gate.replaces("no", confirmed=True)
    assert age_gate.replaces(None, confirmed=True) and age_gate.replaces("yes", confirmed=True)
    assert all(age_gate.replaces(s, confirmed=False) for s in (None, "yes", "no"))


def test_a_search_of_a_refused_record_is_refused_and_refused_candidates_are_not_taken():
    refused = age_gate.refused_search(age_gate.refuses("no"))
    assert refused is not None and refused.outcome is MatchOutcome.AGE_REFUSED
    assert age_gate.refused_search(age_gate.refuses("yes")) is None
    seeker = matching.Seeker(1, "en")
    assert matching.pick(seeker, [matching.Candidate(2, "en", 0.0, age_refused=True)]) is None
