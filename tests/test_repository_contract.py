"""The repository contract: every storage backend must pass these same cases."""

from __future__ import annotations

import itertools
import time

import pytest

from messagine.domain.erasure import banned_remnant
from messagine.domain.ratings import RatingRule, RatingVerdict
from messagine.domain.retention import cutoffs
from messagine.models import (
    EndReason,
    MatchOutcome,
    MessageLink,
    Periods,
    Profile,
    Retention,
    UserRecords,
    UserState,
)
from messagine.storage.port import Repository

T0 = float(int(time.time()))  # links expire by wall-clock TTL on some backends
_update_ids = itertools.count(1)


def profile(user_id: int, first_name: str = "User", language_code: str | None = "en") -> Profile:
    return Profile(user_id, first_name, None, None, language_code)


def register(repo: Repository, user_id: int, language: str = "en", now: float = T0) -> None:
    opened = repo.open_update(next(_update_ids), profile(user_id), language, now)
    assert opened.user is not None


def find(repo: Repository, user_id: int, now: float = T0, recent: int = 5,
         update_id: int | None = None):  # type: ignore[no-untyped-def]
    return repo.find_partner(user_id, recent, now, update_id or next(_update_ids))


# -- updates and users -------------------------------------------------------------------

def export(repository: Repository, user_id: int) -> UserRecords:
    records = repository.export_user(user_id)
    assert records is not None
    return records


def test_open_update_creates_the_user_once_and_refreshes_the_profile(repository: Repository):
    first = repository.open_update(next(_update_ids), profile(1, "Ann"), "de", T0)
    assert not first.duplicate
    assert first.user is not None and first.user.is_new and first.user.language == "de"
    again = repository.open_update(next(_update_ids), profile(1, "Anna", "fr"), "fr", T0 + 5)
    assert again.user is not None and not again.user.is_new
    assert again.user.language == "de", "the default language applies to new users only"
    records = repository.export_user(1)
    assert records is not None
    stored = records.profile
    assert (stored.first_name, stored.last_name, stored.username, stored.language_code) == (
        "Anna", None, None, "fr")
    assert repository.export_user(2) is None


def test_a_claim_is_in_progress_until_its_owner_finishes_it(repository: Repository):
    update_id = next(_update_ids)
    first = repository.open_update(update_id, profile(1), "en", T0, owner="first")
    assert (first.duplicate, first.busy, first.resumed) == (False, False, False)
    assert first.user is not None
    # A re-delivery while the first attempt still runs: busy, nothing changed.
    again = repository.open_update(update_id, profile(1, "Changed"), "en", T0 + 1,
                                   owner="second")
    assert (again.duplicate, again.busy, again.user) == (False, True, None)
    records = repository.export_user(1)
    assert records is not None and records.profile.first_name == "User"
    repository.finish_update(update_id, 1, "first")
    done = repository.open_update(update_id, profile(1), "en", T0 + 2, owner="third")
    assert (done.duplicate, done.busy, done.user) == (True, False, None)


def test_an_expired_lease_is_taken_over_once(repository: Repository):
    update_id = next(_update_ids)
    repository.open_update(update_id, profile(1), "en", T0, owner="dead", lease_s=10)
    assert repository.open_update(update_id, profile(1), "en", T0 + 9, owner="early").busy
    taken = repository.open_update(update_id, profile(1), "en", T0 + 11, owner="new")
    assert taken.resumed and not taken.busy and taken.user is not None
    # The new owner's lease is live: a third attempt waits, and the dead one cannot
    # release what is no longer its claim.
    assert repository.open_update(update_id, profile(1), "en", T0 + 12, owner="third").busy
    repository.release_update(update_id, "dead")
    assert repository.open_update(update_id, profile(1), "en", T0 + 13, owner="fourth").busy
    repository.finish_update(update_id, 1, "new")
    assert repository.open_update(update_id, profile(1), "en", T0 + 14, owner="x").duplicate


def test_the_claim_of_a_deleteme_can_be_finished(repository: Repository):
    """/deleteme erases the user inside its own update; marking it done must not fail."""
    update_id = next(_update_ids)
    repository.open_update(update_id, profile(1), "en", T0, owner="erasing")
    repository.delete_user(1)
    repository.finish_update(update_id, 1, "erasing")
    assert repository.export_user(1) is None, "finishing never brings the user back"


def test_a_released_claim_is_new_again(repository: Repository):
    update_id = next(_update_ids)
    repository.open_update(update_id, profile(1), "en", T0, owner="failed")
    repository.release_update(update_id, "failed")
    retried = repository.open_update(update_id, profile(1), "en", T0 + 1, owner="retry")
    assert (retried.duplicate, retried.busy, retried.resumed) == (False, False, False)
    repository.release_update(update_id)  # without an owner: whoever holds it
    assert not repository.open_update(update_id, profile(1), "en", T0 + 2, owner="x").busy


def test_a_released_claim_of_an_update_with_no_user_is_new_again(repository: Repository):
    """A moderator's press in the moderators' group (no private sender) that failed with a
    503 is processed again when Telegram re-delivers it; once done it is a duplicate."""
    update_id = next(_update_ids)
    assert not repository.open_update(update_id, None, "en", T0, owner="failed").duplicate
    repository.release_update(update_id, "failed")
    assert not repository.open_update(update_id, None, "en", T0 + 1, owner="retry").duplicate
    repository.finish_update(update_id, None, "retry")
    assert repository.open_update(update_id, None, "en", T0 + 2, owner="x").duplicate


def test_many_claims_of_one_user_stay_apart(repository: Repository):
    updates = [next(_update_ids) for _ in range(12)]
    for update_id in updates:
        repository.open_update(update_id, profile(1), "en", T0, owner=f"o{update_id}")
    for update_id in updates[::2]:
        repository.finish_update(update_id, 1, f"o{update_id}")
    for update_id in updates:
        opened = repository.open_update(update_id, profile(1), "en", T0 + 1, owner="late")
        finished = updates.index(update_id) % 2 == 0
        assert (opened.duplicate, opened.busy) == (finished, not finished), update_id


def test_updates_without_a_user_are_claimed_done_at_once(repository: Repository):
    update_id = next(_update_ids)
    opened = repository.open_update(update_id, None, "en", T0)
    assert not opened.duplicate and opened.user is None
    assert repository.open_update(update_id, None, "en", T0).duplicate


# -- matching ----------------------------------------------------------------------------

def test_the_second_searcher_is_paired_with_the_first(repository: Repository):
    register(repository, 1)
    register(repository, 2)
    waiting = find(repository, 1)
    assert waiting.outcome is MatchOutcome.WAITING and waiting.waiting_count == 1
    assert find(repository, 1).outcome is MatchOutcome.ALREADY_WAITING
    matched = find(repository, 2, now=T0 + 3)
    assert matched.outcome is MatchOutcome.MATCHED and matched.chat is not None
    assert matched.chat.partner_id == 1 and not matched.resumed
    one, two = repository.get_user(1), repository.get_user(2)
    assert one is not None and two is not None
    assert one.chat is not None and one.chat.partner_id == 2 and not one.waiting
    assert two.chat is not None and two.chat.partner_id == 1 and not two.waiting
    assert one.chat.chat_id == two.chat.chat_id
    assert find(repository, 1).outcome is MatchOutcome.IN_CHAT


def test_a_redelivered_search_resumes_the_chat_it_made(repository: Repository):
    register(repository, 1)
    register(repository, 2)
    find(repository, 1)
    matched = find(repository, 2, update_id=9_000_001)
    again = find(repository, 2, update_id=9_000_001)
    assert again.outcome is MatchOutcome.MATCHED and again.resumed
    assert again.chat == matched.chat
    assert find(repository, 2, update_id=9_000_002).outcome is MatchOutcome.IN_CHAT


def test_languages_are_separate_pools(repository: Repository):
    register(repository, 1, "en")
    register(repository, 2, "de")
    assert find(repository, 1).outcome is MatchOutcome.WAITING
    assert find(repository, 2).outcome is MatchOutcome.WAITING
    register(repository, 3, "de")
    matched = find(repository, 3)
    assert matched.chat is not None and matched.chat.partner_id == 2
    assert matched.chat.partner_language == "de"


def test_the_longest_waiting_compatible_user_is_chosen(repository: Repository):
    for user_id in (1, 2, 3):
        register(repository, user_id)
    # 1 and 2 were partners, so both can wait at once; 1 has waited longer.
    find(repository, 1, now=T0)
    find(repository, 2, now=T0 + 1)
    chat = find(repository, 1, now=T0 + 2).chat
    assert chat is not None
    repository.end_chat(1, EndReason.EXIT, T0 + 3, next(_update_ids))
    assert find(repository, 1, now=T0 + 10).outcome is MatchOutcome.WAITING
    assert find(repository, 2, now=T0 + 20).outcome is MatchOutcome.WAITING
    matched = find(repository, 3, now=T0 + 30)
    assert matched.chat is not None and matched.chat.partner_id == 1


def test_recent_partners_are_not_paired_again_until_enough_others(repository: Repository):
    for user_id in range(1, 9):
        register(repository, user_id)
    now = T0

    def chat_and_end(a: int, b: int) -> None:
        nonlocal now
        now += 10
        assert find(repository, a, now=now, recent=2).outcome is MatchOutcome.WAITING
        assert find(repository, b, now=now + 1, recent=2).outcome is MatchOutcome.MATCHED
        assert repository.end_chat(a, EndReason.EXIT, now + 2, next(_update_ids)) is not None

    chat_and_end(1, 2)
    assert find(repository, 1, now=now + 5, recent=2).outcome is MatchOutcome.WAITING
    assert find(repository, 2, now=now + 6, recent=2).outcome is MatchOutcome.WAITING, \
        "1 and 2 just met"
    assert repository.leave_lobby(1) and repository.leave_lobby(2)
    chat_and_end(1, 3)
    chat_and_end(1, 4)
    # 2 is no longer among 1's last two partners, and 1 is the only partner 2 had.
    chat_and_end(2, 5)
    chat_and_end(2, 6)
    find(repository, 1, now=now + 5, recent=2)
    assert find(repository, 2, now=now + 6, recent=2).outcome is MatchOutcome.MATCHED


def test_recent_partners_zero_allows_meeting_again(repository: Repository):
    register(repository, 1)
    register(repository, 2)
    find(repository, 1, recent=0)
    find(repository, 2, recent=0)
    repository.end_chat(1, EndReason.EXIT, T0, next(_update_ids))
    find(repository, 1, recent=0)
    assert find(repository, 2, recent=0).outcome is MatchOutcome.MATCHED


@pytest.mark.parametrize("excluder", [1, 2])
def test_an_excluded_pair_never_meets_in_either_direction(repository: Repository, excluder: int):
    register(repository, 1)
    register(repository, 2)
    repository.exclude_pair(excluder, 3 - excluder, "blocked", T0)
    assert find(repository, 1, recent=0).outcome is MatchOutcome.WAITING
    assert find(repository, 2, recent=0).outcome is MatchOutcome.WAITING
    register(repository, 3)
    matched = find(repository, 3, recent=0)
    assert matched.chat is not None and matched.chat.partner_id == 1


# -- ending chats ------------------------------------------------------------------------

def test_a_chat_ends_once_and_a_redelivery_resumes(repository: Repository):
    register(repository, 1)
    register(repository, 2)
    find(repository, 1)
    chat = find(repository, 2).chat
    assert chat is not None
    ended = repository.end_chat(2, EndReason.EXIT, T0 + 60, 7_000_001)
    assert ended is not None and ended.partner_id == 1 and not ended.resumed
    assert ended.chat_id == chat.chat_id
    assert repository.end_chat(1, EndReason.EXIT, T0 + 61, 7_000_002) is None
    assert repository.end_chat(2, EndReason.EXIT, T0 + 61, 7_000_003) is None
    again = repository.end_chat(2, EndReason.EXIT, T0 + 62, 7_000_001)
    assert again is not None and again.resumed and again.chat_id == chat.chat_id
    for user_id in (1, 2):
        state = repository.get_user(user_id)
        assert state is not None and state.chat is None and not state.waiting


def test_lobby_leave_and_language_move(repository: Repository):
    register(repository, 1, "en")
    assert not repository.leave_lobby(1)
    find(repository, 1)
    moved = repository.set_language(1, "de")
    assert moved.language == "de" and moved.waiting
    register(repository, 2, "de")
    matched = find(repository, 2)
    assert matched.chat is not None and matched.chat.partner_id == 1
    refused = repository.set_language(1, "fr")
    assert refused.language == "de" and refused.chat is not None
    register(repository, 3)
    find(repository, 3)
    assert repository.leave_lobby(3)
    state = repository.get_user(3)
    assert state is not None and not state.waiting


def test_blocking_the_bot_leaves_the_lobby(repository: Repository):
    register(repository, 1)
    find(repository, 1)
    repository.set_blocked(1, blocked=True)
    state = repository.get_user(1)
    assert state is not None and state.blocked and not state.waiting
    register(repository, 2)
    assert find(repository, 2).outcome is MatchOutcome.WAITING
    repository.set_blocked(1, blocked=False)
    state = repository.get_user(1)
    assert state is not None and not state.blocked


# -- message links -----------------------------------------------------------------------

def test_message_links_map_both_ways_within_one_chat(repository: Repository):
    register(repository, 1)
    register(repository, 2)
    find(repository, 1)
    chat = find(repository, 2).chat
    assert chat is not None
    link = MessageLink(chat.chat_id, 2, 10, 1, 20, "text", T0)
    repository.record_message(link)
    assert repository.find_message(chat.chat_id, 2, 10) == link
    assert repository.find_message(chat.chat_id, 1, 20) == link
    assert repository.find_message(chat.chat_id, 1, 10) is None
    assert repository.find_message(chat.chat_id + 1, 2, 10) is None
    repository.record_message(link)  # recording twice is harmless
    assert repository.find_message(chat.chat_id, 2, 10) == link


def test_counts(repository: Repository):
    for user_id in range(1, 6):
        register(repository, user_id)
    find(repository, 1)
    find(repository, 2)
    repository.end_chat(1, EndReason.EXIT, T0, next(_update_ids))
    find(repository, 3)
    find(repository, 4)
    find(repository, 5)
    counts = repository.counts(1)
    assert (counts.users, counts.active_chats, counts.previous_chats,
            counts.my_previous_chats, counts.waiting) == (5, 1, 1, 1, 1)
    assert repository.counts(5).my_previous_chats == 0


def test_the_any_language_pool_pairs_only_users_who_opted_in(repository: Repository):
    register(repository, 1, "en")
    register(repository, 2, "de")
    register(repository, 3, "en")
    assert find(repository, 1).outcome is MatchOutcome.WAITING
    assert find(repository, 2).outcome is MatchOutcome.WAITING
    assert not repository.join_any_language(3), "3 is not waiting"
    assert repository.join_any_language(1)
    # 3 speaks English, but 1 now waits in the any-language pool only.
    assert find(repository, 3).outcome is MatchOutcome.WAITING
    assert repository.claim_language_offers(T0 + 1, 10) == [(2, "de"), (3, "en")], \
        "users waiting in a language pool are offered the any-language pool once"
    assert repository.claim_language_offers(T0 + 1, 10) == []
    assert repository.join_any_language(2)
    matched = find(repository, 2)
    assert matched.outcome is MatchOutcome.MATCHED and matched.chat is not None
    assert matched.chat.partner_id == 1 and matched.chat.partner_language == "en"
    one = repository.get_user(1)
    assert one is not None and one.chat is not None and one.chat.partner_language == "de"


def test_an_update_never_ends_the_chat_it_opened(repository: Repository):
    """A re-delivered /next: its first attempt ended the old chat and made a new one."""
    for user_id in (1, 2, 3):
        register(repository, user_id)
    find(repository, 1, update_id=700)
    find(repository, 2, update_id=701)  # 1 and 2 chat
    find(repository, 3, update_id=702)  # 3 waits
    ended = repository.end_chat(1, EndReason.NEXT, T0 + 1, 703)
    assert ended is not None and not ended.resumed and ended.partner_id == 2
    matched = find(repository, 1, now=T0 + 1, update_id=703)
    assert matched.outcome is MatchOutcome.MATCHED and matched.chat is not None
    assert matched.chat.partner_id == 3
    # Update 703 again, from the top: the ending resumes, the new chat stays.
    again = repository.end_chat(1, EndReason.NEXT, T0 + 2, 703)
    assert again is not None and again.resumed and again.partner_id == 2
    state = repository.get_user(1)
    assert state is not None and state.chat is not None and state.chat.partner_id == 3
    resumed = find(repository, 1, now=T0 + 2, update_id=703)
    assert resumed.outcome is MatchOutcome.MATCHED and resumed.resumed


# -- retention ---------------------------------------------------------------------------

def test_purge_deletes_at_most_limit_of_each_kind_per_call(repository: Repository):
    limit = 2
    now = T0 + 2 * 86_400
    claims = [next(_update_ids) for _ in range(2 * limit + 1)]
    for number, claim in enumerate(claims):  # 2 * limit + 1 of each kind, all expired
        repository.open_update(claim, None, "en", T0)
        repository.record_message(MessageLink(1, 10, 100 + number, 11, 200 + number, "text",
                                              T0))
        first, second = 20 + 2 * number, 21 + 2 * number
        # Registered "now": on SQLite each update is a claim too, and these must stay.
        register(repository, first, now=now)
        register(repository, second, now=now)
        find(repository, first)
        chat = find(repository, second).chat
        assert chat is not None
        assert repository.end_chat(first, EndReason.EXIT, T0 + 60, next(_update_ids))
        repository.add_report(first, second, chat.chat_id, "spam", T0)
        repository.exclude_pair(first, second, "report", T0)
        repository.confirm_age(900 + number, False, T0)  # nobody: the refusal marker
    repository.record_message(MessageLink(1, 10, 999, 11, 998, "text", now - 10))  # fresh
    repository.add_report(20, 21, 999_999, "spam", now - 10)  # another chat: one per chat
    repository.exclude_pair(21, 20, "block", now - 10)
    repository.confirm_age(999, False, now - 10)
    retention = Retention(messages_s=86_400, chats_s=86_400, claims_s=86_400,
                          age_refusals_s=86_400, reports_s=86_400, exclusions_s=86_400)

    calls = [repository.purge_expired(now, retention, limit) for _ in range(4)]

    kinds = ("messages", "claims", "chats", "reports", "exclusions", "age_refusals")
    assert calls == [dict.fromkeys(kinds, 2)] * 2 + [dict.fromkeys(kinds, 1),
                                                    dict.fromkeys(kinds, 0)]
    assert [u for u in (900, 901, 999) if repository.get_user(u)] == [999], "fresh stays"
    assert [r.reported_id for r in export(repository, 20).reports] == [21]
    assert [e[0] for e in export(repository, 21).exclusions] == [20]
    assert repository.find_message(1, 10, 100) is None
    assert repository.find_message(1, 11, 200) is None, "both ends of a message go"
    assert repository.find_message(1, 10, 999) is not None, "a fresh message stays"
    assert repository.last_chat(20) is None
    assert not repository.open_update(claims[0], None, "en", now).duplicate, "the claim went"


# -- erasure and the records of a user -------------------------------------------------------

def test_the_banned_remnant_after_deleteme_is_the_same_on_every_backend(
        repository: Repository):
    """Whatever was stored, /deleteme of a banned user leaves ``banned_remnant`` only."""
    for user_id in (1, 2):
        register(repository, user_id)
    repository.set_analytics_opt_out(1, True)
    repository.confirm_age(1, True, T0)
    repository.set_reminders(1, False)
    find(repository, 1)
    matched = find(repository, 2)
    assert matched.chat is not None
    repository.record_message(MessageLink(matched.chat.chat_id, 1, 5, 2, 6, "text", T0))
    repository.add_report(1, 2, matched.chat.chat_id, "spam", T0)
    repository.end_chat(1, EndReason.EXIT, T0 + 1, next(_update_ids))
    repository.exclude_pair(1, 2, "report", T0 + 1)
    repository.open_update(next(_update_ids), profile(1, "Ann"), "en", T0 + 2, "album")
    assert find(repository, 1, now=T0 + 2).outcome is MatchOutcome.WAITING
    assert repository.set_banned(1, True)
    repository.delete_user(1)

    assert repository.export_user(1) == UserRecords(banned_remnant(1))
    assert repository.get_user(1) == UserState(
        user_id=1, language="en", is_new=False, blocked=False, banned=True, chat=None,
        waiting_since=None, analytics_opt_out=False, age_confirmed=False, language_code=None,
        reminders_enabled=False)
    assert 1 not in [n.user_id for n in repository.claim_nudges(T0 + 3600, T0 + 3600, 10)]
    assert repository.count_idle_excluded(T0 + 3600)["banned"] == 0
    records = repository.export_user(2)
    assert records is not None and [c.partner_id < 0 for c in records.chats] == [True]
    assert records.messages == [] and records.exclusions == []
    opened = repository.open_update(next(_update_ids), profile(1, "Ann"), "en", T0 + 5)
    assert opened.user is not None and opened.user.banned, "the ban stays"


def test_the_state_carries_the_reminder_choice(repository: Repository):
    register(repository, 1)
    state = repository.get_user(1)
    assert state is not None and state.reminders_enabled
    repository.set_reminders(1, False)
    state = repository.get_user(1)
    assert state is not None and not state.reminders_enabled
    opened = repository.open_update(next(_update_ids), profile(1), "en", T0 + 1)
    assert opened.user is not None and not opened.user.reminders_enabled
    records = repository.export_user(1)
    assert records is not None and not records.profile.reminders_enabled


def test_a_user_marked_blocked_who_searches_again_is_paired(repository: Repository):
    """Blocking takes a user out of the lobby; searching again means they are back."""
    register(repository, 1)
    register(repository, 2)
    repository.set_blocked(2, True)
    assert find(repository, 2).outcome is MatchOutcome.WAITING
    matched = find(repository, 1)
    assert matched.outcome is MatchOutcome.MATCHED and matched.chat is not None
    assert matched.chat.partner_id == 2


def test_retention_selects_in_bounded_batches_and_claims_each_notice_once(
        repository: Repository):
    periods = Periods(idle_chat_hours=1, inactive_days=30, notice_days=7)
    for user_id in (40, 41, 42, 43, 44):
        register(repository, user_id)
    find(repository, 40)
    find(repository, 41)
    find(repository, 42)
    find(repository, 43)  # two chats: 40-41 and 42-43; 44 alone
    cut = cutoffs(T0 + 2 * 3_600, periods)
    first = repository.idle_chats(cut, 1)
    assert len(first) == 1 and first[0][1] == "en"
    assert {u for u, _ in repository.idle_chats(cut, 10)} in (
        {40, 42}, {40, 43}, {41, 42}, {41, 43}), "one user of each chat"
    assert repository.idle_chats(cutoffs(T0, periods), 10) == [], "seen since"

    later = T0 + 25 * 86_400
    cut = cutoffs(later, periods)
    claimed = [repository.claim_inactivity_notices(cut, later, 2) for _ in range(4)]
    assert [len(batch) for batch in claimed] == [2, 2, 1, 0]
    assert {u for batch in claimed for u, _ in batch} == {40, 41, 42, 43, 44}
    assert repository.inactive_accounts(cut, 10) == [], "told just now"
    register(repository, 44, now=later + 86_400)  # back: kept
    gone = cutoffs(later + 8 * 86_400, periods)
    assert len(repository.inactive_accounts(gone, 3)) == 3
    assert set(repository.inactive_accounts(gone, 10)) == {40, 41, 42, 43}


# -- ratings -------------------------------------------------------------------------------

def test_a_rating_counts_once_per_chat_and_shows_only_as_counts(repository: Repository):
    rule = RatingRule(window_s=3600.0, flag_after=2)
    register(repository, 1)
    assert repository.rate_user(1, 10, True, T0, rule) == RatingVerdict(counted=True)
    for again in (True, False):  # a second press, either way, or a re-delivery
        assert repository.rate_user(1, 10, again, T0 + 5, rule) == RatingVerdict(counted=False)
    assert repository.rate_user(1, 11, False, T0 + 6, rule) == RatingVerdict(counted=True)
    records = repository.export_user(1)
    assert records is not None
    assert (records.profile.ratings_up, records.profile.ratings_down) == (1, 1)
    assert repository.rate_user(99, 12, False, T0, rule) == RatingVerdict(counted=False)
    assert repository.export_user(99) is None, "rating an unknown user creates nobody"


def test_the_flag_is_raised_once_at_the_threshold(repository: Repository):
    rule = RatingRule(window_s=3600.0, flag_after=3)
    register(repository, 1)
    verdicts = [repository.rate_user(1, chat, False, T0 + chat, rule) for chat in range(1, 6)]
    assert [v.flag for v in verdicts] == [False, False, True, False, False]
    records = repository.export_user(1)
    assert records is not None and records.profile.ratings_down == 5


def test_a_chat_counted_long_ago_is_forgotten_by_the_record_not_by_the_counts(
        repository: Repository):
    rule = RatingRule(window_s=60.0, flag_after=5)
    register(repository, 1)
    assert repository.rate_user(1, 10, True, T0, rule).counted
    assert repository.rate_user(1, 11, True, T0 + 120, rule).counted
    assert not repository.rate_user(1, 11, True, T0 + 130, rule).counted
    records = repository.export_user(1)
    assert records is not None and records.profile.ratings_up == 2


def test_the_newest_message_only_grows_and_needs_a_user(repository: Repository):
    register(repository, 1)
    for message_id in (5, 9, 7):
        repository.note_newest(1, message_id)
    state = repository.get_user(1)
    assert state is not None and state.newest_message == 9
    repository.note_newest(2, 4)
    assert repository.get_user(2) is None, "noting creates nobody"


def test_a_chat_is_found_by_id_only_by_its_users(repository: Repository):
    for user_id in (1, 2, 3):
        register(repository, user_id)
    find(repository, 1)
    chat = find(repository, 2).chat
    assert chat is not None
    repository.end_chat(1, EndReason.EXIT, T0 + 10, next(_update_ids))
    for user_id, partner in ((1, 2), (2, 1)):
        record = repository.chat_of(user_id, chat.chat_id)
        assert record is not None and record.chat_id == chat.chat_id
        assert (record.partner_id, record.ended_at, record.end_reason) == (partner, T0 + 10,
                                                                            "exit")
        assert record.ended_by_user is (user_id == 1)
    assert repository.chat_of(3, chat.chat_id) is None, "not a user of the chat"
    assert repository.chat_of(1, chat.chat_id + 999) is None
