"""A /deleteme cut short by a storage outage, then re-delivered by Telegram, on every backend.

The first attempt answers 503 part way through the erasure (MongoDB and Firestore have
already deleted the user's document then); Telegram delivers the button press again. The
erasure must then be complete: nothing stored names the user, their partner is out of
the chat, the kept protections carry a tombstone; and a user who answered No to the age
question keeps the refusal marker with its time, so the gate stays closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import Clock, MakeBot, redeliver_until_processed
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.runtime import Runtime
from messagine.storage import documents as docs
from messagine.storage.port import StorageUnavailable
from support.http_entries import JOB_SECRET, post, run_job
from support.raw_store import dump, values

DAY = 86_400.0
ALICE, BOB, CAROL = 4_503_599_627_370_001, 4_503_599_627_370_002, 4_503_599_627_370_003


@contextmanager
def outage_in(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> Iterator[list[int]]:
    """``target.name`` raises StorageUnavailable on its first call; the calls made."""
    real: Callable[..., Any] = getattr(target, name)
    calls: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailable(f"test: outage in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)
    yield calls
    monkeypatch.setattr(target, name, real)


def _fault(runtime: Runtime, where: str) -> tuple[Any, str]:
    """Where the outage strikes: in delete_user at the kept protections, or at its first
    deletion after the profile step (SQLite: anywhere in it, one transaction), or after
    delete_user (the refusal marker's rewrite)."""
    if where == "kept":
        return docs, "kept"
    if where == "erasure":
        sqlite = runtime.repository.backend == "sqlite"
        return runtime.repository, "delete_user" if sqlite else "_delete_where"
    return runtime.repository, where


def _process(runtime: Runtime, update: dict[str, Any]) -> str:
    return runtime.pipeline.process(update).outcome


@pytest.fixture
def bot(make_bot: MakeBot) -> Runtime:
    return make_bot(RECENT_PARTNERS="0")


def _erase_interrupted(runtime: Runtime, user: FakeUser, monkeypatch: pytest.MonkeyPatch,
                       where: str) -> None:
    """/deleteme, its button pressed; the first attempt meets an outage, Telegram retries."""
    post(runtime, user.command("deleteme"))
    press = user.press_button("Delete everything")
    with outage_in(monkeypatch, *_fault(runtime, where)) as calls:
        first = runtime.pipeline.process(press)
        assert (first.status, first.outcome) == (503, "retry:storage")
        assert calls, "the outage struck"
    assert redeliver_until_processed(runtime, press) == "button:deleteme:deleted"


@pytest.mark.parametrize("where", ["erasure", "confirm_age"])
def test_an_interrupted_deleteme_of_a_refused_user_keeps_the_marker(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock,
        monkeypatch: pytest.MonkeyPatch, where: str):
    runtime = make_bot(MIN_AGE="16", AGE_REFUSAL_DAYS="30")
    young = fake_api.user(ALICE, "Young")
    post(runtime, young.command("find_chat"))
    prompt = next(m for m in reversed(young.inbox()) if "age:no" in str(m.get("reply_markup")))
    post(runtime, young.press(prompt["message_id"], "age:no"))
    refused = runtime.repository.export_user(young.id)
    assert refused is not None and refused.profile.age_answer == "no"
    clock.advance(DAY)
    _erase_interrupted(runtime, young, monkeypatch, where)
    after = runtime.repository.export_user(young.id)
    assert after is not None and after.profile.age_answer == "no", "the marker is gone"
    assert after.profile.age_answered_at == refused.profile.age_answered_at
    post(runtime, young.command("find_chat"))
    assert "answer stands" in young.last()["text"], "the age gate reopened"


@pytest.mark.parametrize("where", ["erasure", "kept"])
def test_an_interrupted_deleteme_completes_when_telegram_delivers_it_again(
        bot: Runtime, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch, where: str):
    alice, bob, carol = (fake_api.user(i, n) for i, n in ((ALICE, "Alice"), (BOB, "Bob"),
                                                           (CAROL, "Carol")))
    for update in (alice.command("find_chat"), bob.command("find_chat"), bob.text("hi"),
                   alice.text("hello"), alice.command("report")):
        post(bot, update)
    post(bot, alice.press_button("Spam"))
    for update in (carol.command("find_chat"), bob.command("find_chat"), bob.text("hey")):
        post(bot, update)
    carol_state = bot.repository.get_user(CAROL)
    assert carol_state is not None and carol_state.chat is not None
    assert carol_state.chat.partner_id == BOB
    _erase_interrupted(bot, bob, monkeypatch, where)
    assert BOB not in values(dump(bot.repository)), "a record still names the erased user"
    carol_state = bot.repository.get_user(CAROL)
    assert carol_state is not None and carol_state.chat is None
    (kept,) = [r for r in dump(bot.repository)["reports"] if r["reporter_id"] == ALICE]
    assert kept["reported_id"] < 0 and len(kept["reported_key"]) == 64
    post(bot, bob.command("find_chat"))
    post(bot, alice.command("find_chat"))
    state = bot.repository.get_user(ALICE)
    assert state is not None and state.chat is None, "the report's protection was lost"


def _cut_short(runtime: Runtime, user: FakeUser, monkeypatch: pytest.MonkeyPatch,
               where: str) -> None:
    """/deleteme's press meets an outage, and is never delivered again (Telegram gave up,
    or the user went away)."""
    post(runtime, user.command("deleteme"))
    press = user.press_button("Delete everything")
    with outage_in(monkeypatch, *_fault(runtime, where)) as calls:
        assert runtime.pipeline.process(press).status == 503
        assert calls, "the outage struck"


@pytest.mark.parametrize("where", ["erasure", "kept"])
def test_an_erasure_cut_short_and_never_redelivered_is_finished_by_the_job(
        make_bot: MakeBot, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch, where: str):
    """MongoDB and Firestore delete the user document first: an erasure cut short there
    left records naming the user that no later update would find. The scheduled job
    finishes it. (SQLite's erasure is one transaction: cut short, nothing was erased, and
    the user still has their account to ask again.)"""
    runtime = make_bot(RECENT_PARTNERS="0", JOB_SECRET=JOB_SECRET)
    alice, bob, carol = (fake_api.user(i, n) for i, n in ((ALICE, "Alice"), (BOB, "Bob"),
                                                           (CAROL, "Carol")))
    for update in (alice.command("find_chat"), bob.command("find_chat"), bob.text("hi"),
                   alice.command("report")):
        post(runtime, update)
    post(runtime, alice.press_button("Spam"))
    for update in (carol.command("find_chat"), bob.command("find_chat"), bob.text("hey")):
        post(runtime, update)
    _cut_short(runtime, bob, monkeypatch, where)
    one_transaction = runtime.repository.backend == "sqlite"
    assert runtime.repository.unfinished_erasures(10) == ([] if one_transaction else [BOB])
    assert run_job(runtime)["erasures_finished"] == (0 if one_transaction else 1)
    if one_transaction:
        assert runtime.repository.get_user(BOB) is not None, "nothing was erased"
        return
    assert BOB not in values(dump(runtime.repository)), "a record still names the erased user"
    carol_state = runtime.repository.get_user(CAROL)
    assert carol_state is not None and carol_state.chat is None
    (kept,) = [r for r in dump(runtime.repository)["reports"] if r["reporter_id"] == ALICE]
    assert kept["reported_id"] < 0 and len(kept["reported_key"]) == 64
    assert run_job(runtime)["erasures_finished"] == 0, "finished once"


def test_a_user_back_before_the_job_keeps_the_new_account_and_loses_the_old_records(
        make_bot: MakeBot, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch):
    """Bob's /deleteme is cut short, and he is back (and paired with Carol) before the job
    runs. The job finishes the erasure he asked for: his chat with Alice no longer names
    him; his new account and his chat with Carol stay, on both sides."""
    runtime = make_bot(RECENT_PARTNERS="0", JOB_SECRET=JOB_SECRET)
    alice, bob, carol = (fake_api.user(i, n) for i, n in ((ALICE, "Alice"), (BOB, "Bob"),
                                                           (CAROL, "Carol")))
    for update in (alice.command("find_chat"), bob.command("find_chat"), bob.text("hi"),
                   bob.command("next"), alice.command("cancel")):
        post(runtime, update)
    _cut_short(runtime, bob, monkeypatch, "erasure")
    for update in (bob.command("start"), carol.command("find_chat"), bob.command("find_chat"),
                   bob.text("hello again")):
        post(runtime, update)
    finished = run_job(runtime)["erasures_finished"]
    assert finished == (0 if runtime.repository.backend == "sqlite" else 1)
    back, carol_state = runtime.repository.get_user(BOB), runtime.repository.get_user(CAROL)
    assert back is not None and back.chat is not None and back.chat.partner_id == CAROL
    assert carol_state is not None and carol_state.chat is not None
    assert carol_state.chat.partner_id == BOB
    records = runtime.repository.export_user(ALICE)
    assert records is not None and len(records.chats) == 1
    if finished:
        assert records.chats[0].partner_id < 0, "the old chat still names Bob"
        assert not dump(runtime.repository).get("erasures"), "the journal entry stayed"


def test_a_block_made_after_coming_back_survives_the_finished_erasure(
        make_bot: MakeBot, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch):
    """Bob's /deleteme is cut short; back, he is paired with Carol and blocks her. The job
    finishes his erasure, and his block still keeps Carol away from him."""
    runtime = make_bot(RECENT_PARTNERS="0", JOB_SECRET=JOB_SECRET)
    bob, carol = fake_api.user(BOB, "Bob"), fake_api.user(CAROL, "Carol")
    post(runtime, bob.command("start"))
    _cut_short(runtime, bob, monkeypatch, "erasure")
    for update in (bob.command("start"), carol.command("find_chat"), bob.command("find_chat"),
                   bob.command("block")):
        post(runtime, update)
    run_job(runtime)
    for update in (carol.command("find_chat"), bob.command("find_chat")):
        post(runtime, update)
    state = runtime.repository.get_user(BOB)
    assert state is not None and state.chat is None and state.waiting, "paired with Carol"


def test_a_user_back_while_their_erasure_runs_keeps_a_consistent_new_chat(
        bot: Runtime, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch):
    """Bob's next updates arrive while his /deleteme is still running (Telegram delivers
    a user's updates concurrently): he comes back and is paired with Carol. Whatever the
    erasure then does, Bob and Carol must agree on whether they are in a chat."""
    alice, bob, carol = (fake_api.user(i, n) for i, n in ((ALICE, "Alice"), (BOB, "Bob"),
                                                           (CAROL, "Carol")))
    for update in (alice.command("find_chat"), bob.command("find_chat"), bob.text("hi")):
        post(bot, update)
    post(bot, bob.command("deleteme"))
    press = bob.press_button("Delete everything")
    target, name = ((bot.repository, "delete_user") if bot.repository.backend == "sqlite"
                    else (bot.repository, "_delete_where"))
    real = getattr(target, name)
    came_back: list[int] = []

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not came_back and bot.repository.backend != "sqlite":
            came_back.append(1)
            for update in (carol.command("find_chat"), bob.command("find_chat")):
                assert _process(bot, update) != "retry:storage"
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, meanwhile)
    assert _process(bot, press) == "button:deleteme:deleted"
    monkeypatch.setattr(target, name, real)
    if not came_back:  # SQLite: one transaction, so the updates wait until it is done
        for update in (carol.command("find_chat"), bob.command("find_chat")):
            post(bot, update)
    bob_state, carol_state = bot.repository.get_user(BOB), bot.repository.get_user(CAROL)
    assert carol_state is not None
    bob_partner = None if bob_state is None or bob_state.chat is None \
        else bob_state.chat.partner_id
    carol_partner = None if carol_state.chat is None else carol_state.chat.partner_id
    assert (bob_partner == CAROL) == (carol_partner == BOB), (bob_partner, carol_partner)
    # The chat from before the erasure no longer names Bob.
    alice_records = bot.repository.export_user(ALICE)
    assert alice_records is not None and alice_records.chats
    assert all(chat.partner_id != BOB for chat in alice_records.chats)
