"""The claim lease follows REQUEST_TIMEOUT_SECONDS, on every backend.

An attempt that is still copying holds its update; a re-delivery is answered 503 for as
long as the request timeout (plus a margin) says the attempt may still run, and takes the
update over after that: the attempt was killed with its instance.
"""

from __future__ import annotations

import threading

from conftest import Clock, MakeBot
from messagine.dev.fake_bot_api import FakeBotApi


def test_a_redelivery_waits_out_the_lease_the_request_timeout_gives(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    runtime = make_bot(REQUEST_TIMEOUT_SECONDS="10", TELEGRAM_TIMEOUT_SECONDS="5",
                       MIN_AGE="0", RECENT_PARTNERS="0")
    deliver = runtime.pipeline.process
    alice, bob = fake_api.user(6_100_001, "Alice"), fake_api.user(6_100_002, "Bob")
    deliver(alice.command("find_chat"))
    deliver(bob.command("find_chat"))
    slow = fake_api.fail("copyMessage", chat_id=bob.id, status=200, delay=2, times=1)
    update = alice.text("copied slowly")
    first = threading.Thread(target=deliver, args=(update,))
    first.start()
    for _ in range(200):  # until the first attempt's copy is in flight
        if slow.hits:
            break
        threading.Event().wait(0.01)
    assert slow.hits, "the copy never started"
    try:
        clock.advance(19)  # the lease is 10 + 10 s: the first attempt may still run
        assert deliver(update).outcome == "retry:in_progress"
        clock.advance(2)  # past it: the first attempt is taken for dead
        assert deliver(update).outcome != "retry:in_progress"
    finally:
        first.join(10)
