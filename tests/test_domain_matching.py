"""The matching rule as a pure function: compatibility, the choice, and resuming."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from messagine.domain.matching import (
    ANY_LANGUAGE,
    Candidate,
    Seeker,
    avoided,
    compatible,
    end_answer,
    may_end,
    pick,
    queued,
    ranked,
    recent_partners,
    resume_search,
    unpairable_others,
)
from messagine.models import ActiveChat, EndedChat, EndReason, MatchOutcome
from support.strategies import MAX_ID, ids, tombstones

pools = st.sampled_from(["en", "de", ANY_LANGUAGE])
times = st.floats(min_value=0, max_value=2e9, allow_nan=False)


@st.composite
def candidates(draw: st.DrawFn, pool: str | None = None) -> Candidate:
    return Candidate(draw(ids), pool or draw(pools), draw(times),
                     frozenset(draw(st.sets(ids, max_size=3))), draw(st.booleans()))


def test_same_pool_and_nothing_in_the_way_is_compatible():
    assert compatible(Seeker(1, "en"), Candidate(2, "en", 0.0))
    assert compatible(Seeker(1, ANY_LANGUAGE), Candidate(2, ANY_LANGUAGE, 0.0))


def test_other_pools_never_mix_not_even_with_the_any_language_pool():
    assert not compatible(Seeker(1, "en"), Candidate(2, "de", 0.0))
    assert not compatible(Seeker(1, "en"), Candidate(2, ANY_LANGUAGE, 0.0))
    assert not compatible(Seeker(1, ANY_LANGUAGE), Candidate(2, "en", 0.0))


def test_nobody_is_paired_with_themselves():
    assert not compatible(Seeker(0, "en"), Candidate(0, "en", 0.0))


def test_an_exclusion_in_one_direction_only_still_keeps_them_apart():
    assert not compatible(Seeker(1, "en", frozenset({2})), Candidate(2, "en", 0.0))
    assert not compatible(Seeker(1, "en"), Candidate(2, "en", 0.0, frozenset({1})))


def test_banned_users_are_never_taken():
    assert not compatible(Seeker(1, "en"), Candidate(2, "en", 0.0, banned=True))


def test_the_longest_waiting_compatible_user_is_taken_ties_by_id():
    seeker = Seeker(1, "en", frozenset({5}))
    waiting = [Candidate(5, "en", 1.0), Candidate(4, "en", 3.0), Candidate(3, "en", 3.0),
               Candidate(6, "de", 0.0), Candidate(7, "en", 2.0, frozenset({1}))]
    assert pick(seeker, waiting) == Candidate(3, "en", 3.0)
    assert [c.user_id for c in ranked(seeker, waiting)] == [3, 4]


def test_an_empty_pool_gives_nobody():
    assert pick(Seeker(1, "en"), []) is None
    assert ranked(Seeker(1, "en"), []) == []


@given(seeker_id=ids, pool=pools, avoid=st.sets(ids, max_size=4),
       waiting=st.lists(candidates(), max_size=12))
def test_pick_is_the_first_of_ranked_and_always_compatible(
        seeker_id: int, pool: str, avoid: set[int], waiting: list[Candidate]):
    seeker = Seeker(seeker_id, pool, frozenset(avoid))
    chosen = pick(seeker, waiting)
    order = ranked(seeker, waiting)
    assert chosen == (order[0] if order else None)
    assert all(compatible(seeker, c) for c in order)
    assert len(order) == sum(compatible(seeker, c) for c in waiting)
    if chosen is not None:
        assert all((chosen.since, chosen.user_id) <= (c.since, c.user_id) for c in order)


@given(a=ids, b=ids, pool=pools, avoid_a=st.sets(ids, max_size=3),
       avoid_b=st.sets(ids, max_size=3))
def test_compatibility_is_symmetric(a: int, b: int, pool: str, avoid_a: set[int],
                                    avoid_b: set[int]):
    one = compatible(Seeker(a, pool, frozenset(avoid_a)),
                     Candidate(b, pool, 0.0, frozenset(avoid_b)))
    other = compatible(Seeker(b, pool, frozenset(avoid_b)),
                       Candidate(a, pool, 0.0, frozenset(avoid_a)))
    assert one == other


def test_avoided_holds_recent_partners_and_exclusions_either_way_but_not_oneself():
    assert avoided(1, [2, 3], [(1, 4, None), (5, 1, None)]) == frozenset({2, 3, 4, 5})
    assert avoided(0, [], []) == frozenset()
    assert avoided(MAX_ID, [MAX_ID], [(MAX_ID, 0, None)]) == frozenset({0})


def test_recent_partners_are_the_newest_n_chats():
    chats = [[1, 2], [3, 1], [1, 4]]
    assert recent_partners(1, chats, 2) == [2, 3]
    assert recent_partners(1, chats, 0) == []
    assert recent_partners(1, [[-7, 1]], 5) == [-7], "a tombstone id stays a partner"


def test_a_search_resumes_the_chat_its_own_update_opened():
    chat = ActiveChat(9, 2, "en", 0.0)
    resumed = resume_search(chat, 17, 17)
    assert resumed is not None and resumed.outcome is MatchOutcome.MATCHED and resumed.resumed
    busy = resume_search(chat, 16, 17)
    assert busy is not None and busy.outcome is MatchOutcome.IN_CHAT and not busy.resumed
    assert resume_search(chat, None, 0) is not None
    assert resume_search(None, 17, 17) is None


@given(reason=st.sampled_from(list(EndReason)), opened=st.one_of(st.none(), ids), update=ids)
def test_only_a_next_is_kept_from_ending_the_chat_its_update_opened(
        reason: EndReason, opened: int | None, update: int):
    assert may_end(reason, opened, update) == (reason is not EndReason.NEXT or opened != update)


def test_an_end_is_answered_when_written_now_or_to_the_update_that_wrote_it():
    assert end_answer(7, 2, "de", True, None, 40) == EndedChat(7, 2, "de", resumed=False)
    assert end_answer(7, 2, "de", False, 40, 40) == EndedChat(7, 2, "de", resumed=True)
    assert end_answer(7, 2, "de", False, 41, 40) is None  # the partner ended it first
    assert end_answer(7, 2, "de", False, None, 40) is None


def test_a_search_that_finds_nobody_waits_or_keeps_waiting():
    assert queued(was_waiting=False, waiting_count=1).outcome is MatchOutcome.WAITING
    again = queued(was_waiting=True, waiting_count=0)
    assert again.outcome is MatchOutcome.ALREADY_WAITING and again.waiting_count == 0


@given(user=ids, victim=ids, stone=tombstones)
def test_an_exclusion_binds_the_erased_user_by_their_key(user: int, victim: int, stone: int):
    """After /deleteme the exclusion names a tombstone and the key: the key still binds."""
    assume(victim != user)
    kept = [(victim, stone, "key-of-user")]
    bound = avoided(user, [], kept, "key-of-user")
    assert bound == frozenset({victim})
    assert stone not in bound, "a tombstone is nobody to avoid"
    assert avoided(user, [], kept, "key-of-someone-else") == frozenset()
    assert avoided(user, [], kept) == frozenset(), "no key, no match"


def test_after_queueing_everyone_else_in_the_pool_is_unpairable():
    assert unpairable_others(queued(was_waiting=False, waiting_count=1)) == 0
    assert unpairable_others(queued(was_waiting=False, waiting_count=4)) == 3
    assert unpairable_others(queued(was_waiting=True, waiting_count=0)) == 0
