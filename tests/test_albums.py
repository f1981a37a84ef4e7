"""Albums arrive as albums: one copyMessages call per album, through HTTP on every backend.

The function server runs as functions-framework does on a laptop, so an in-process timer
flushes each album; ``test_album_flush_through_cloud_tasks`` runs the Google Cloud path,
a Cloud Task per album, through a fake Cloud Tasks server that calls the function back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import (
    BACKENDS,
    SECRET,
    FunctionServer,
    backend_env,
    bot_env,
    free_port,
)
from conftest import pair_over_http as _pair
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.dev.fake_cloud_tasks import FakeCloudTasks
from messagine.domain.albums import FLUSH_ATTEMPTS, Retries
from messagine.schedule import ALBUM_TASK, TASK_HEADER

pytestmark = pytest.mark.slow
on_every_backend = pytest.mark.parametrize("served", BACKENDS, indirect=True)
BOLD = [{"type": "bold", "offset": 0, "length": 4}]


def _until(condition: Callable[[], Any], seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("did not happen in time")


def _send_album(server: FunctionServer, updates: list[dict[str, Any]]) -> None:
    for update in updates:
        response = server.post(update)
        assert response.status_code == 200


def _file_id(message: dict[str, Any]) -> str:
    for kind in ("photo", "video", "document", "audio"):
        if kind in message:
            item = message[kind]
            return str((item[-1] if isinstance(item, list) else item)["file_id"])
    raise AssertionError(f"no media in {sorted(message)}")


@on_every_backend
@pytest.mark.parametrize("kind", ["photo", "video", "document", "audio"])
def test_an_album_arrives_as_one_copy_messages_call_in_order_with_its_caption(
        function_server: FunctionServer, served_api: FakeBotApi, kind: str):
    base = 7_000_000 + 10_000 * ["photo", "video", "document", "audio"].index(kind)
    a, b = _pair(function_server, served_api, base)
    updates = a.album(kind, 3, caption="look at these", caption_entities=BOLD)
    _send_album(function_server, updates)
    calls = _until(lambda: served_api.calls_of("copyMessages", b.id))
    time.sleep(0.5)  # nothing more comes
    assert len(served_api.calls_of("copyMessages", b.id)) == 1
    assert calls[0].params["message_ids"] == [u["message"]["message_id"] for u in updates]
    assert not served_api.calls_of("copyMessage", b.id), "no item went on its own"
    copies = served_api.messages(b.id)[-3:]
    assert [_file_id(m) for m in copies] == [_file_id(u["message"]) for u in updates]
    assert copies[0]["caption"] == "look at these"
    assert copies[0]["caption_entities"] == BOLD
    assert len({m["media_group_id"] for m in copies}) == 1, "kept together as one album"
    assert "outcome=album:collected" in function_server.log()
    _until(lambda: "outcome=album:sent" in function_server.log())
    assert function_server.post(a.command("next")).status_code == 200
    assert function_server.post(a.command("cancel_find")).status_code == 200


@on_every_backend
def test_replies_edits_and_delete_reach_the_right_item_and_redelivery_sends_nothing_twice(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = _pair(function_server, served_api, 7_100_000)
    updates = a.album("photo", 3, caption="one")
    originals = [u["message"]["message_id"] for u in updates]
    _send_album(function_server, updates)
    _until(lambda: served_api.calls_of("copyMessages", b.id))
    copies = [m["message_id"] for m in served_api.messages(b.id)[-3:]]
    # B replies to the copy of the second item: A sees a reply to their second photo.
    reply = b.text("this one!", reply_to=copies[1])
    assert function_server.post(reply).status_code == 200
    assert served_api.messages(a.id)[-1]["reply_to_message"]["message_id"] == originals[1]
    # A edits the second item's caption: B's second copy changes, the others do not.
    assert function_server.post(a.edit(originals[1], caption="two")).status_code == 200
    shown = {m["message_id"]: m for m in served_api.messages(b.id)}
    assert shown[copies[1]]["caption"] == "two"
    assert shown[copies[0]]["caption"] == "one" and "caption" not in shown[copies[2]]
    # A replaces the third item's picture: B's third copy shows it.
    edit = a.replace_media(originals[2], "photo", "AgAD-replacement")
    assert function_server.post(edit).status_code == 200
    shown = {m["message_id"]: m for m in served_api.messages(b.id)}
    assert _file_id(shown[copies[2]]) == "AgAD-replacement"
    # /delete as a reply to the first item deletes B's first copy only.
    assert function_server.post(a.command("delete", reply_to=originals[0])).status_code == 200
    left = {m["message_id"] for m in served_api.messages(b.id)}
    assert copies[0] not in left and {copies[1], copies[2]} <= left
    # Re-delivered items (the same updates, and the same messages under new update ids,
    # as Telegram may send them) copy nothing again.
    served_api.reset_calls()
    function_server.mark_log()
    for update in updates:
        assert function_server.post(update).status_code == 200
        again = {**update, "update_id": served_api.next_update_id()}
        assert function_server.post(again).status_code == 200
    time.sleep(3.5)  # longer than a flush takes
    assert not served_api.calls_of("copyMessages")
    assert "outcome=album:duplicate" in function_server.log()
    assert function_server.post(a.command("next")).status_code == 200
    assert function_server.post(a.command("cancel_find")).status_code == 200


@on_every_backend
def test_an_album_the_partner_never_gets_is_reported_to_the_sender(
        function_server: FunctionServer, served_api: FakeBotApi):
    # The chat ends before the album is flushed: the sender is told.
    a, b = _pair(function_server, served_api, 7_200_000)
    _send_album(function_server, a.album("photo", 2))
    assert function_server.post(b.command("next")).status_code == 200
    _until(lambda: any("before this message reached them" in t for t in a.texts()))
    assert not served_api.calls_of("copyMessages")
    assert function_server.post(b.command("cancel_find")).status_code == 200
    # The partner blocked the bot (403): the chat ends and the sender is told.
    c, d = _pair(function_server, served_api, 7_300_000)
    _send_album(function_server, c.album("video", 2))
    served_api.blocked.add(d.id)
    _until(lambda: any("has left Messagine" in t for t in c.texts()))
    _until(lambda: "outcome=album:partner_unreachable" in function_server.log())
    served_api.blocked.discard(d.id)


def test_an_album_counts_once_against_the_flood_limit(tmp_path: Path,
                                                       request: pytest.FixtureRequest):
    with FakeBotApi() as api:
        env = {**bot_env(api, tmp_path / "flood.sqlite3"), "FLOOD_LIMIT": "3",
               **backend_env(request, "sqlite")}
        server = FunctionServer(env)
        try:
            a, b = _pair(server, api, 7_400_000)
            time.sleep(3.1)  # a fresh flood window
            _send_album(server, a.album("photo", 8))
            _until(lambda: api.calls_of("copyMessages", b.id))
            assert len(api.calls_of("copyMessages", b.id)[0].params["message_ids"]) == 8
            assert "throttled" not in server.log()
        finally:
            server.stop()


def test_album_flush_through_cloud_tasks(tmp_path: Path, request: pytest.FixtureRequest):
    """On Google Cloud a Cloud Task per batch calls the function back; bad calls are refused."""
    tasks = FakeCloudTasks(Retries(FLUSH_ATTEMPTS, 0.2, 0.2, 0))
    port = free_port()
    queue = "projects/demo-project/locations/europe-west1/queues/albums"
    with FakeBotApi() as api:
        env = {**bot_env(api, tmp_path / "tasks.sqlite3"), **backend_env(request, "sqlite"),
               "ALBUM_QUEUE": queue, "ALBUM_FLUSH_URL": f"http://127.0.0.1:{port}/",
               "CLOUD_TASKS_ENDPOINT": tasks.url}
        server = FunctionServer(env, port=port)
        try:
            a, b = _pair(server, api, 7_500_000)
            updates = a.album("document", 4, caption="files")
            _send_album(server, updates)
            assert len(tasks.tasks) == 1, "one task per album"
            (task,) = tasks.tasks.values()
            assert task.name.startswith(queue + "/tasks/") and task.name.endswith("-1")
            assert task.headers[TASK_HEADER] == ALBUM_TASK
            calls = _until(lambda: api.calls_of("copyMessages", b.id))
            assert calls[0].params["message_ids"] == [u["message"]["message_id"]
                                                      for u in updates]
            _until(lambda: task.statuses and task.statuses[-1] == 200)
            # A re-delivered item of a sent batch asks for no task at all.
            creates = tasks.creates
            server.post({**updates[0], "update_id": api.next_update_id()})
            assert len(tasks.tasks) == 1 and tasks.creates == creates
            # Cloud Tasks unreachable: the item's update is answered 503 and retried.
            tasks.fail_creates = 1
            more = a.album("photo", 2)
            assert server.post(more[0]).status_code == 503
            assert server.post(more[0]).status_code == 200
            assert server.post(more[1]).status_code == 200
            _until(lambda: len(api.calls_of("copyMessages", b.id)) == 2)
            # A flush request without the secret, or naming no album, is refused.
            headers = {TASK_HEADER: ALBUM_TASK}
            assert requests.post(server.url, json={"album": "x", "batch": 1}, headers=headers,
                                 timeout=10).status_code == 401
            bad = server.post({"album": "../etc", "batch": "1"}, headers=dict(headers))
            assert bad.status_code == 400
            assert "refused an album flush" in server.log()
            unknown = server.post({"album": "1-2-0123456789abcdef", "batch": 1},
                                  headers=dict(headers))
            assert unknown.status_code == 200 and "outcome=album:unknown" in server.log()
            assert SECRET not in server.log()
        finally:
            server.stop()
            tasks.stop()


def test_an_album_the_queue_gives_up_on_is_reported_to_the_sender(
        tmp_path: Path, request: pytest.FixtureRequest):
    """Telegram fails every copy: the queue's last attempt tells the sender, answers 200."""
    tasks = FakeCloudTasks(Retries(FLUSH_ATTEMPTS, 0.02, 0.02, 0))
    port = free_port()
    with FakeBotApi() as api:
        env = {**bot_env(api, tmp_path / "give-up.sqlite3"), **backend_env(request, "sqlite"),
               "ALBUM_QUEUE": "projects/demo-project/locations/europe-west1/queues/albums",
               "ALBUM_FLUSH_URL": f"http://127.0.0.1:{port}/", "CLOUD_TASKS_ENDPOINT": tasks.url}
        server = FunctionServer(env, port=port)
        try:
            a, b = _pair(server, api, 7_600_000)
            api.fail("copyMessages", chat_id=b.id, status=502, times=None)
            _send_album(server, a.album("photo", 2))
            (task,) = tasks.tasks.values()
            _until(lambda: len(task.statuses) == FLUSH_ATTEMPTS, seconds=60)
            assert task.statuses[:-1] == [503] * (FLUSH_ATTEMPTS - 1)
            assert task.statuses[-1] == 200, "given up: the queue stops"
            assert a.last()["text"] == \
                "Telegram did not accept this message, so your partner did not get it."
            assert "outcome=album:given_up" in server.log()
        finally:
            server.stop()
            tasks.stop()
