"""The document <-> record mappings that MongoDB and Firestore share (pure, no store)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain.flood import FloodState
from messagine.models import ChatRecord, EndReason, MessageLink, Profile, Report
from messagine.storage import documents
from support.strategies import MAX_ID, ids


@given(st.builds(FloodState, last_album=st.one_of(st.none(), st.text(max_size=5))))
def test_flood_counters_round_trip_as_one_map(state: FloodState):
    assert documents.flood_state({"flood": documents.flood_document(state)}) == state
    assert documents.flood_state({}) == FloodState()


def test_a_new_user_reads_back_with_the_defaults():
    doc = {**documents.new_user_fields("de", 5.0),
           **documents.profile_fields(Profile(7, "Ann", None, None, "fr"), 5.0)}
    state = documents.user_state(7, doc, is_new=True)
    assert (state.user_id, state.language, state.is_new, state.language_code) == \
        (7, "de", True, "fr")
    assert state.reminders_enabled and not state.banned and state.chat is None
    profile = documents.stored_profile(7, doc, {"language": "*", "since": 6.0})
    assert (profile.first_seen, profile.last_seen, profile.nudge_pending) == (5.0, 5.0, True)
    assert profile.lobby is not None and profile.lobby.language == "*"


@given(link=st.builds(MessageLink, chat_id=ids, sender_id=ids, sender_message_id=ids,
                      recipient_id=ids, copy_message_id=ids, content_type=st.just("text"),
                      sent_at=st.floats(0, 2e9)))
def test_message_links_round_trip(link: MessageLink):
    assert documents.message_link(documents.link_document(link, documents.utc(0))) == link


@given(report=st.builds(Report, report_id=ids, reporter_id=st.integers(-(2**62), MAX_ID),
                        reported_id=ids, chat_id=ids, reason=st.just("spam"),
                        created_at=st.floats(0, 2e9), status=st.just("open")))
def test_reports_round_trip(report: Report):
    assert documents.report(report.report_id, documents.report_document(report)) == report


def test_chats_read_from_either_side():
    doc = {**documents.chat_document([2, 1], "en", 3.0, 11),
           **documents.ended_fields(1, EndReason.EXIT, 4.0, 12, documents.utc(4.0))}
    assert documents.chat_record(9, doc, 1) == ChatRecord(9, 2, "en", 3.0, 4.0, "exit", True,
                                                          11, 12)
    assert documents.chat_record(9, doc, 2).ended_by_user is False


def test_anonymising_writes_only_what_changes():
    chat = {"users": [1, 2], "ended_by": 2}
    assert documents.anonymised_chat(chat, 1, -3) == {"users": [-3, 2]}
    assert documents.anonymised_chat(chat, 2, -4) == {"users": [1, -4], "ended_by": -4}
    assert documents.anonymised_chat(chat, 5, -4) is None


def test_a_lobby_entry_is_a_candidate_with_its_user_flags():
    entry = documents.lobby_document("en", 2.0, {3, 1}, offered=False)
    assert entry["avoid"] == [1, 3]
    candidate = documents.candidate(0, entry, {"banned": True, "blocked": True})
    assert candidate.avoid == frozenset({1, 3}) and candidate.banned


def test_a_user_document_gives_the_reminder_rule_its_status():
    doc = {**documents.new_user_fields("en", 5.0),
           **documents.profile_fields(Profile(7, "Ann", None, None, None), 5.0)}
    status = documents.nudge_status(7, doc)
    assert status.nudge_pending and status.reminders_enabled and status.last_seen == 5.0
    assert not documents.nudge_status(7, documents.remnant_document(7)).nudge_pending
