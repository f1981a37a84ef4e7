"""Every promise of the privacy policy, as commands, on every storage backend."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from conftest import (
    BACKENDS,
    Clock,
    backend_env,
    bot_env,
    drop_test_repository,
    mongo_database_name,
)
from messagine.catalog import Catalog
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.models import MessageLink, Periods, Retention
from messagine.moderation import EVIDENCE_MESSAGES
from messagine.privacy import PrivacyTerms, policy_text, split_message
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.registry import SqliteOptions, backend, options

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB, CAROL = 777_001, 777_002, 777_003


@pytest.fixture(params=BACKENDS)
def privacy_bot(request: pytest.FixtureRequest, fake_api: FakeBotApi, tmp_path: Path,
                clock: Clock) -> Iterator[Runtime]:
    env = bot_env(fake_api, tmp_path / "privacy.sqlite3", MIN_AGE="16")
    env |= backend_env(request, request.param)
    runtime = build_runtime(Settings.from_env(env), clock=clock)
    yield runtime
    if request.param != "sqlite":
        drop_test_repository(request, runtime.repository)


def everything_stored(runtime: Runtime) -> list[Any]:
    """Every value in every table or collection of the backend, flattened."""
    repository: Any = runtime.repository
    values: list[Any] = []
    if runtime.repository.backend == "sqlite":
        conn = sqlite3.connect(options(runtime.settings, SqliteOptions).path)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                values.extend(row)
        conn.close()
        return values

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            values.append(value)

    if runtime.repository.backend == "firestore":
        for collection in repository.client.collections():
            for snap in collection.stream():
                # Document ids hold user ids too ("users/777001", "links/777001:5").
                values.extend(int(part) if part.lstrip("-").isdigit() else part
                              for part in snap.id.split(":"))
                walk(snap.to_dict())
        return values
    for name in repository.db.list_collection_names():
        for doc in repository.db[name].find():
            walk(doc)
    return values


def chat_history(runtime: Runtime, alice: FakeUser, bob: FakeUser, carol: FakeUser) -> None:
    """Alice chats with Bob (both write), then with Carol, and blocks Carol."""
    process = runtime.pipeline.process
    for user in (alice, bob, carol):
        process(user.command("start"))
        runtime.repository.confirm_age(user.id, True, runtime.pipeline.clock())
    for update in (alice.command("find_chat"), bob.command("find_chat"),
                   alice.text("alice's first words"), bob.text("bob's answer"),
                   alice.media("photo", caption="alice's photo"), alice.command("next"),
                   carol.command("find_chat"), carol.text("carol says hi")):
        process(update)
    runtime.repository.exclude_pair(alice.id, carol.id, "blocked", runtime.pipeline.clock())


def test_privacy_sends_the_policy(privacy_bot: Runtime, fake_api: FakeBotApi):
    alice = fake_api.user(ALICE, "Alice")
    outcome = privacy_bot.pipeline.process(alice.command("privacy")).outcome
    parts = int(outcome.removeprefix("privacy:text:"))
    assert 1 <= parts <= 2, "split at paragraphs within Telegram's 4096 characters"
    text = "\n\n".join(list(alice.texts())[-parts:])
    for promise in ("30 days", "180 days", "1 day", "/mydata", "/deleteme", "/analytics off",
                    "/set_language", "Mixpanel", "Google Cloud", "Telegram",
                    "messaginebot@gmail.com", "16 and over"):
        assert promise in text, promise
    store = backend(privacy_bot.repository.backend).store_name
    assert f"{store} stores the records above" in text


def test_the_policy_can_be_a_link(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "x.sqlite3",
                  PRIVACY_POLICY_URL="https://example.org/privacy")
    runtime = build_runtime(Settings.from_env(env))
    alice = fake_api.user(ALICE, "Alice")
    assert runtime.pipeline.process(alice.command("privacy")).outcome == "privacy:link"
    assert alice.last()["text"] == "Our privacy policy: https://example.org/privacy"


def test_docs_privacy_is_the_text_the_bot_sends():
    settings = Settings.from_env({"TELEGRAM_TOKEN": "123456789:AAH-some_token_value_0123456789"})
    terms = PrivacyTerms(settings.privacy_contact, None, settings.message_retention_days,
                         settings.chat_retention_days, settings.min_age)
    text = policy_text(Catalog().for_language("en"), terms)
    assert text in (ROOT / "docs" / "privacy.md").read_text()


def test_every_policy_says_what_a_report_shows_the_moderators():
    settings = Settings.from_env({"TELEGRAM_TOKEN": "123456789:AAH-some_token_value_0123456789"})
    terms = PrivacyTerms(settings.privacy_contact, None, settings.message_retention_days,
                         settings.chat_retention_days, settings.min_age)
    catalog = Catalog()
    for language in catalog.languages():
        text = policy_text(catalog.for_language(language), terms)
        paragraphs = text.split("\n\n")
        moderation = [p for p in paragraphs if f" {EVIDENCE_MESSAGES} " in p]
        assert len(moderation) == 1, language  # one section names the number
        title = moderation[0].split("\n")[0]
        # "Nobody reads your chats" points at the one exception, by the section's title.
        assert title in text.replace(moderation[0], ""), language


def test_long_texts_are_split_at_telegrams_limit():
    text = "\n".join(f"paragraph {i} " + "x" * 300 for i in range(40))
    parts = split_message(text)
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text
    assert [len(p) for p in split_message("y" * 9000)] == [4096, 4096, 808]


def test_mydata_is_exactly_the_users_data(privacy_bot: Runtime, fake_api: FakeBotApi):
    alice = fake_api.user(ALICE, "Alice", username="alice_u", last_name="Liddell")
    bob, carol = fake_api.user(BOB, "Bob", username="bob_u"), fake_api.user(CAROL, "Carol")
    chat_history(privacy_bot, alice, bob, carol)
    privacy_bot.pipeline.process(alice.command("analytics off"))
    assert privacy_bot.pipeline.process(alice.command("mydata")).outcome == "mydata:sent"
    message = alice.last()
    assert message["document"]["file_name"] == "messagine-my-data.json"
    data = json.loads(message["document"]["content"])
    assert data["format"] == "messagine-user-data/1"
    assert data["profile"]["telegram_id"] == ALICE
    assert data["profile"]["username"] == "alice_u"
    assert data["profile"]["last_name"] == "Liddell"
    assert data["settings"]["analytics"] == "off"
    assert [c["partner"] for c in data["chats"]] == ["partner-1", "partner-2"]
    assert data["chats"][0]["how_it_ended"] == "next" and data["chats"][0]["ended_by"] == "you"
    assert data["chats"][1]["ended_at"] is None
    assert [m["content_type"] for m in data["messages_sent"]] == ["text", "photo"]
    assert data["blocked_users"] == [{"user": "partner-2", "reason": "blocked",
                                      "at": data["blocked_users"][0]["at"]}]
    serialised = json.dumps(data)
    for other in (str(BOB), str(CAROL), "Bob", "bob_u", "Carol", "bob's answer",
                  "carol says hi", "alice's first words"):
        assert other not in serialised, f"{other!r} is not Alice's data"


def test_deleteme_erases_every_trace(privacy_bot: Runtime, fake_api: FakeBotApi):
    alice = fake_api.user(ALICE, "Alice", username="alice_u", last_name="Liddell")
    bob, carol = fake_api.user(BOB, "Bob"), fake_api.user(CAROL, "Carol")
    chat_history(privacy_bot, alice, bob, carol)
    process = privacy_bot.pipeline.process
    assert process(alice.command("deleteme")).outcome == "deleteme:asked"
    assert process(alice.press_button("Cancel")).outcome == "button:deleteme:cancelled"
    assert privacy_bot.repository.get_user(ALICE) is not None
    process(alice.command("deleteme"))
    assert process(alice.press_button("Delete everything")).outcome == "button:deleteme:deleted"
    assert carol.last()["text"].startswith("Chat closed by your partner.\n")
    assert "Done. Deleted: your profile" in alice.last()["text"]

    stored = everything_stored(privacy_bot)
    for trace in (ALICE, "Alice", "alice_u", "Liddell"):
        assert trace not in stored, f"{trace!r} is still stored"
    assert BOB in stored, "Bob's own data stays"
    assert privacy_bot.repository.counts(BOB).my_previous_chats == 1, \
        "Bob's history keeps the chat, without Alice"
    bob_chats = privacy_bot.repository.export_user(BOB)
    assert bob_chats is not None and bob_chats.chats[0].partner_id < 0

    # Idempotent, and a later /start begins as a new user.
    process(alice.command("deleteme"))
    assert process(alice.press_button("Delete everything")).outcome == "button:deleteme:deleted"
    assert process(alice.command("start")).outcome == "start:new"


def test_analytics_objection(privacy_bot: Runtime, fake_api: FakeBotApi):
    alice = fake_api.user(ALICE, "Alice")
    process = privacy_bot.pipeline.process
    assert process(alice.command("analytics")).outcome == "analytics:status"
    assert "Analytics about you is on" in alice.last()["text"]
    assert process(alice.command("analytics off")).outcome == "analytics:off"
    state = privacy_bot.repository.get_user(ALICE)
    assert state is not None and state.analytics_opt_out
    process(alice.command("analytics"))
    assert "Analytics about you is off" in alice.last()["text"]
    assert process(alice.command("analytics on")).outcome == "analytics:on"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_age_question_comes_before_a_first_chat(
    backend: str, fake_api: FakeBotApi, tmp_path: Path, request: pytest.FixtureRequest
):
    env = bot_env(fake_api, tmp_path / "age.sqlite3", MIN_AGE="16")
    env |= backend_env(request, backend)
    runtime = build_runtime(Settings.from_env(env))
    process = runtime.pipeline.process
    young, adult = fake_api.user(ALICE, "Young"), fake_api.user(BOB, "Adult")
    assert process(young.command("find_chat")).outcome == "find:age_asked"
    assert "16 or older" in young.last()["text"]
    assert process(young.press_button("No")).outcome == "button:age:no"
    assert "only for people aged 16 and over" in young.last()["text"]
    state = runtime.repository.get_user(ALICE)
    assert state is not None and not state.waiting and not state.age_confirmed
    assert process(adult.command("find_chat")).outcome == "find:age_asked"
    assert process(adult.press_button("Yes, I am 16")).outcome == "button:age:yes+waiting"
    assert process(adult.command("find_chat")).outcome == "find:already_waiting"
    records = runtime.repository.export_user(BOB)
    assert records is not None and records.profile.age_answer == "yes"
    assert records.profile.age_answered_at is not None
    if backend != "sqlite":
        drop_test_repository(request, runtime.repository)


def test_expired_records_are_purged_by_the_clock(privacy_bot: Runtime,
                                                fake_api: FakeBotApi, clock: Clock):
    """Every backend deletes by query too: TTL monitors may lag (Firestore's by a day)."""
    backend = privacy_bot.repository.backend
    alice, bob = fake_api.user(ALICE, "Alice"), fake_api.user(BOB, "Bob")
    for user in (alice, bob):
        privacy_bot.pipeline.process(user.command("start"))
        privacy_bot.repository.confirm_age(user.id, True, clock())
    for update in (alice.command("find_chat"), bob.command("find_chat"), alice.text("old"),
                   alice.command("next")):
        privacy_bot.pipeline.process(update)
    retention = Retention(messages_s=30 * 86_400, chats_s=180 * 86_400)
    repository = privacy_bot.repository
    assert repository.purge_expired(clock() + 3_600, retention, 100) == {
        "messages": 0, "claims": 0, "chats": 0, "reports": 0, "exclusions": 0, "age_refusals": 0}
    # SQLite keeps each update id a day; MongoDB and Firestore keep a user's last 50 in
    # their document.
    assert repository.purge_expired(clock() + 29 * 86_400, retention, 100) == {
        "messages": 0, "claims": 6 if backend == "sqlite" else 0, "chats": 0,
        "reports": 0, "exclusions": 0, "age_refusals": 0}
    assert repository.purge_expired(clock() + 31 * 86_400, retention, 100) == {
        "messages": 1, "claims": 0, "chats": 0, "reports": 0, "exclusions": 0, "age_refusals": 0}
    assert repository.purge_expired(clock() + 181 * 86_400, retention, 100)["chats"] == 1


def test_mongo_expires_records_with_ttl_indexes(mongo_uri: str, clock: Clock):
    from messagine.models import EndReason, Profile
    from messagine.storage.mongo import MongoRepository

    name = mongo_database_name()
    repository = MongoRepository(mongo_uri, name, message_retention_days=30,
                                 chat_retention_days=180)
    try:
        for user_id in (ALICE, BOB):
            repository.open_update(user_id, Profile(user_id, "U", None, None, None), "en",
                                   clock())
            repository.find_partner(user_id, 5, clock(), user_id)
        state = repository.get_user(ALICE)
        assert state is not None and state.chat is not None
        repository.record_message(MessageLink(state.chat.chat_id, ALICE, 5, BOB, 7, "text",
                                              clock()))
        repository.end_chat(ALICE, EndReason.EXIT, clock() + 60, 99)
        db = repository.db
        link = db.message_links.find_one({"sender_id": ALICE})
        chat = db.chats.find_one({"_id": state.chat.chat_id})
        assert link["expires_at"].timestamp() == pytest.approx(clock() + 30 * 86_400)
        assert chat["expires_at"].timestamp() == pytest.approx(clock() + 60 + 180 * 86_400)
        indexes = {**db.message_links.index_information(), **db.chats.index_information()}
        assert indexes["links_ttl"]["expireAfterSeconds"] == 0
        assert indexes["chats_ttl"]["expireAfterSeconds"] == 0
    finally:
        client: pymongo.MongoClient[Any] = repository.db.client
        client.drop_database(name)
        repository.close()


def test_reports_are_in_mydata_and_a_ban_outlives_erasure(make_bot, fake_api: FakeBotApi):
    bot = make_bot(ADMIN_IDS="1")
    process = bot.pipeline.process
    alice, bob = fake_api.user(ALICE, "Alice"), fake_api.user(BOB, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat"), bob.text("spam"),
                   alice.command("report")):
        process(update)
    process(alice.press_button("Spam"))
    process(alice.command("mydata"))
    data = json.loads(alice.last()["document"]["content"])
    assert [(r["about"], r["reason"], r["status"]) for r in data["reports"]] == \
        [("partner-1", "spam", "open")]

    process(fake_api.user(1, "Admin").command(f"ban {BOB} spam"))
    process(bob.command("deleteme"))
    process(bob.press_button("Delete everything"))
    stored = everything_stored(bot)
    assert "Bob" not in stored, "the banned user's profile is gone"
    assert process(bob.command("start")).outcome == "banned", "the ban stays"

    process(alice.command("deleteme"))
    process(alice.press_button("Delete everything"))
    assert ALICE not in everything_stored(bot), "the reporter is not kept with the report"
    assert BOB in everything_stored(bot), "the report about Bob stays, for safety"


def test_firestore_records_carry_the_expiry_its_ttl_policies_use(
        request: pytest.FixtureRequest, clock: Clock, tmp_path: Path):
    from conftest import open_test_repository
    from messagine.models import EndReason, Profile

    repository = open_test_repository(request, "firestore", tmp_path / "unused")
    try:
        for user_id in (ALICE, BOB):
            repository.open_update(user_id, Profile(user_id, "U", None, None, None), "en",
                                   clock())
            repository.find_partner(user_id, 5, clock(), user_id)
        repository.open_update(555, None, "en", clock())
        state = repository.get_user(ALICE)
        assert state is not None and state.chat is not None
        repository.record_message(MessageLink(state.chat.chat_id, ALICE, 5, BOB, 7, "text",
                                              clock()))
        repository.end_chat(ALICE, EndReason.EXIT, clock() + 60, 99)
        client = repository.client
        links = [s.to_dict() for s in client.collection("links").stream()]
        chat = client.collection("chats").document(str(state.chat.chat_id)).get().to_dict()
        claim = client.collection("claims").document("555").get().to_dict()
        assert [link["expires_at"].timestamp() for link in links] == \
            [pytest.approx(clock() + 30 * 86_400)] * 2
        assert chat["expires_at"].timestamp() == pytest.approx(clock() + 60 + 180 * 86_400)
        assert claim["expires_at"].timestamp() == pytest.approx(clock() + 86_400)
        docs = (ROOT / "docs" / "storage.md").read_text()
        for group in ("links", "chats", "claims"):
            assert (f"gcloud firestore fields ttls update expires_at --collection-group={group}"
                    in docs), f"docs/storage.md enables the TTL policy of {group}"
    finally:
        drop_test_repository(request, repository)


def test_every_policy_states_each_retention_period_and_the_age_marker():
    periods = Periods(age_refusal_days=41, idle_chat_hours=53, report_days=367,
                      exclusion_days=389, inactive_days=401, notice_days=19)
    terms = PrivacyTerms("privacy@example.org", None, 31, 181, 17, "sqlite", periods)
    catalog = Catalog()
    for language in catalog.languages():
        text = policy_text(catalog.for_language(language), terms)
        for number in ("41", "53", "367", "389", "401", "19", "31", "181", "17"):
            assert number in text, (language, number)
        age = next(p for p in text.split("\n\n") if "41" in p)
        assert "17" in age and "privacy@example.org" in age, language
        assert "privacy@example.org" in text.split("\n\n")[-1], "contact closes the policy"
