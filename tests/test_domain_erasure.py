"""The erasure rule as pure functions: tombstones, anonymised chats, the banned remnant."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.erasure import (
    TOMBSTONE_BITS,
    Tombstones,
    anonymise_chat,
    banned_remnant,
    is_tombstone,
    kept_after_erasure,
    protection_key,
    returned,
    tombstone,
)
from messagine.storage import documents
from support.strategies import MAX_ID, ids, tombstones


def test_tombstones_are_negative_at_both_ends_of_the_draw():
    assert tombstone(lambda bits: 0) == -1
    assert tombstone(lambda bits: 2**bits - 1) == -(2**TOMBSTONE_BITS)
    assert all(tombstone() < 0 for _ in range(100))


@given(user=ids, other=st.one_of(ids, tombstones), ender=st.sampled_from(["user", "other", None]),
       stone=tombstones)
def test_the_erased_user_is_replaced_everywhere_in_a_chat_and_nobody_else(
        user: int, other: int, ender: str | None, stone: int):
    ended_by = {"user": user, "other": other, None: None}[ender]
    changed = anonymise_chat((other, user), ended_by, user, stone)
    assert changed is not None
    assert user not in changed.users or other == user
    assert changed.users[0] == (stone if other == user else other)
    assert changed.ended_by == (stone if ended_by == user else ended_by)


def test_a_chat_without_the_user_is_left_alone():
    assert anonymise_chat((1, 2), 1, 3, -5) is None
    assert anonymise_chat((), None, 0, -1) is None


def test_the_banned_remnant_is_the_id_and_the_ban_only():
    remnant = banned_remnant(MAX_ID)
    assert remnant.user_id == MAX_ID and remnant.banned
    assert (remnant.first_name, remnant.last_name, remnant.username, remnant.language_code) \
        == ("", None, None, None)
    assert (remnant.first_seen, remnant.last_seen) == (0.0, 0.0)
    assert not remnant.blocked and not remnant.analytics_opt_out
    assert remnant.age_answer is None and remnant.age_answered_at is None
    assert not remnant.reminders_enabled and not remnant.nudge_pending
    assert remnant.reminded_at is None and remnant.lobby is None
    assert banned_remnant(0) == banned_remnant(0), "the same record whoever asks"


@given(user=ids)
def test_only_a_banned_user_keeps_anything(user: int):
    assert kept_after_erasure(user, banned=False) is None
    assert kept_after_erasure(user, banned=True) == banned_remnant(user)


@given(user=ids)
def test_the_remnant_document_reads_back_as_the_remnant(user: int):
    doc = documents.remnant_document(user)
    assert documents.stored_profile(user, doc, None) == banned_remnant(user)
    state = documents.user_state(user, doc)
    assert state.banned and state.chat is None and not state.waiting


@given(user=ids, other=ids, pepper=st.binary(min_size=16, max_size=64))
def test_the_protection_key_is_the_same_for_the_same_id_and_pepper_only(
        user: int, other: int, pepper: bytes):
    key = protection_key(pepper, user)
    assert key == protection_key(pepper, user), "a returning user gives the same key"
    assert len(key) == 64 and int(key, 16) >= 0, "a hex digest, whatever the id"
    assert (protection_key(pepper, other) == key) == (other == user)
    assert protection_key(pepper + b"!", user) != key, "another pepper, another key"


@given(partners=st.lists(st.one_of(ids, tombstones), min_size=1, max_size=20))
def test_an_erasure_gives_each_partner_one_tombstone_of_their_own(partners: list[int]):
    stones = Tombstones()
    first = {p: stones.of(p) for p in partners}
    assert all(stones.of(p) == first[p] for p in partners), "one per partner"
    assert len(set(first.values())) == len(first), "never shared between partners"
    assert all(stone < 0 for stone in first.values())


@given(user=ids, others=st.lists(ids, max_size=20), pepper=st.binary(min_size=16))
def test_a_returning_user_is_found_by_their_key_among_others(
        user: int, others: list[int], pepper: bytes):
    key = protection_key(pepper, user)
    assert returned(pepper, key, [*others, user]) == [u for u in [*others, user] if u == user]
    assert returned(pepper, key, [o for o in others if o != user]) == []
    assert returned(pepper + b"?", key, [user]) == [], "another pepper finds nobody"


@given(user=ids, stone=tombstones)
def test_tombstones_and_telegram_ids_never_mix(user: int, stone: int):
    assert is_tombstone(stone) and not is_tombstone(user)
