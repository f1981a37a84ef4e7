"""copyMessages in the fake Bot API, through the bot's own gateway: as Telegram models it."""

from __future__ import annotations

import pytest
import telebot

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.telegram import (
    Telegram,
    TelegramBlocked,
    TelegramRejected,
    TelegramUnavailable,
    configure_transport,
)


@pytest.fixture
def gateway(fake_api: FakeBotApi) -> Telegram:
    configure_transport(fake_api.url, 5)
    return Telegram(telebot.TeleBot(fake_api.token, threaded=False))


def test_an_album_is_copied_in_order_and_kept_together(fake_api: FakeBotApi, gateway: Telegram):
    alice, bob = fake_api.user(1), fake_api.user(2)
    ids = [u["message"]["message_id"] for u in alice.album("photo", 3, caption="three")]
    before = len(fake_api.messages(bob.id))
    copies = gateway.copy_messages(bob.id, alice.id, ids)
    shown = fake_api.messages(bob.id)[before:]
    assert copies == [m["message_id"] for m in shown] and copies == sorted(copies)
    assert [m["photo"][-1]["file_id"] for m in shown] == [
        f"AgAD-photo-large#{n}" for n in (1, 2, 3)]
    assert shown[0]["caption"] == "three"
    assert len({m["media_group_id"] for m in shown}) == 1
    assert {m["media_group_id"] for m in shown} != {fake_api.messages(alice.id)[-1][
        "media_group_id"]}, "the copies make an album of their own"


def test_what_cannot_be_found_is_skipped_and_nothing_to_copy_is_refused(
        fake_api: FakeBotApi, gateway: Telegram):
    alice, bob = fake_api.user(1), fake_api.user(2)
    first = alice.media("photo")["message"]["message_id"]
    assert len(gateway.copy_messages(bob.id, alice.id, [first, first + 50])) == 1
    with pytest.raises(TelegramRejected) as refused:
        gateway.copy_messages(bob.id, alice.id, [first + 60, first + 61])
    assert refused.value.code == 400


@pytest.mark.parametrize("ids", [[], [3, 2], [2, 2], list(range(1, 102))])
def test_ids_must_be_1_to_100_and_strictly_increasing(fake_api: FakeBotApi, gateway: Telegram,
                                                      ids: list[int]):
    alice, bob = fake_api.user(1), fake_api.user(2)
    for _ in range(3):
        alice.media("photo")
    with pytest.raises(TelegramRejected) as refused:
        gateway.copy_messages(bob.id, alice.id, ids)
    assert refused.value.code == 400


def test_a_blocked_recipient_is_403_and_a_flood_429(fake_api: FakeBotApi, gateway: Telegram):
    alice, bob = fake_api.user(1), fake_api.user(2)
    ids = [u["message"]["message_id"] for u in alice.album("video", 2)]
    fake_api.blocked.add(bob.id)
    with pytest.raises(TelegramBlocked):
        gateway.copy_messages(bob.id, alice.id, ids)
    fake_api.blocked.clear()
    fake_api.fail("copyMessages", status=429, retry_after=3)
    with pytest.raises(TelegramUnavailable) as limited:
        gateway.copy_messages(bob.id, alice.id, ids)
    assert limited.value.retry_after == 3
    assert gateway.copy_messages(bob.id, alice.id, ids)
