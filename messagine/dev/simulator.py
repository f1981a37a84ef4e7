"""A Telegram delivery simulator: many users, several instances, Telegram's delivery rules.

It drives the real HTTP entry point (functions-framework serving main.py, one server per
simulated instance, each with several worker processes) the way Telegram delivers
webhooks: each chat's updates in order with one in flight per chat, a non-2xx answer, a
timeout or a broken connection re-delivered with a growing backoff, and at most
``max_connections`` requests in flight overall. Faults are injected on the side: the fake
Bot API failing a share of calls, the store taken away and given back, worker processes
killed mid-request (gunicorn starts new ones, as the platform replaces instances). Two
conditions target exactly-once and chat-bound delivery: copies that Telegram performs only
after the simulated Telegram gave up on the request (so the update is re-delivered while
its first attempt still runs), and users leaving their chat (/next, or /exit_chat and
Yes) while their partner's texts to them are held back by 429s.

At the end it checks, from the fake Bot API's record of every chat and from the store:
every text a user sent in a chat reached the partner exactly once and in order (or, when
the partner was unreachable (403), a prefix of it and the chat ended; or, when the chat
ended first, not at all and the sender was told), no text reached its recipient in a
later chat than the one it was sent in, and every pair and lobby invariant holds.
``tests/test_simulator.py`` runs it small in CI on every backend;
``benchmarks/simulate.py`` runs it large by hand.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from messagine import keyboards
from messagine.catalog import Catalog
from messagine.dev.fake_bot_api import FailureRule, FakeBotApi, FakeUser
from messagine.dev.fake_cloud_tasks import FakeCloudTasks
from messagine.domain import claims
from messagine.domain.albums import FLUSH_ATTEMPTS, Retries
from messagine.models import ChatRecord, UserRecords, UserState

_SIMULATED_TEXT = re.compile(r"u\d+ r\d+ m\d+")
ROOT = Path(__file__).resolve().parents[2]
JsonObject = dict[str, Any]


QUEUE_RETRIES = Retries(FLUSH_ATTEMPTS, min_backoff_s=0.5, max_backoff_s=2.0, max_doublings=2)
"""The fake album queue's retries: about 75 s in all, against production's 12 minutes."""


@dataclass(frozen=True, slots=True)
class Load:
    """How much to simulate."""

    users: int = 24
    messages_per_user: int = 5
    rounds: int = 2
    languages: tuple[str, ...] = ("en", "de")
    instances: int = 2
    workers_per_instance: int = 2
    threads_per_worker: int = 4
    max_connections: int = 16
    """Telegram's setWebhook max_connections: requests in flight at once, overall."""
    delivery_timeout_s: float = 30.0
    """Telegram waits 60 s for an answer; shorter here, still above any request's bound."""
    first_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    give_up_after_s: float = 180.0
    """Telegram keeps trying for 24 hours; an update still failing after this is lost."""
    album_every: int = 4
    """One user in this many sends an album (2-4 items) after their second text, each
    round (0: no albums); a Cloud Task per album (a fake queue) flushes it."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong during the run (shares are of Bot API calls)."""

    api_5xx: float = 0.0
    api_429: float = 0.0
    api_timeout: float = 0.0
    """The call hangs past the bot's Telegram timeout and never happens."""
    api_403: float = 0.0
    """copyMessage: the partner blocked the bot."""
    kill_every_s: float = 0.0
    """SIGKILL a random worker process this often (0: never)."""
    storage_outages: int = 0
    outage_s: float = 3.0
    slow_copies: float = 0.0
    """copyMessage: Telegram performs the copy, but only after ``slow_s``."""
    slow_s: float = 0.0
    """Longer than Load.delivery_timeout_s: the simulated Telegram gives up on the request
    and re-delivers the update while its first attempt still waits for the copy."""
    leavers: float = 0.0
    """Share of the pairs in which one user leaves mid-chat, between their texts (/next and
    /exit_chat with Yes by turns), while copies to them are held back by 429s."""
    held_copies: float = 0.5
    """Share of the copies to a leaver answered 429 (retry_after 1 to 3 s)."""

    def any(self) -> bool:
        """True when something is injected."""
        return bool(self.api_5xx or self.api_429 or self.api_timeout or self.api_403
                    or self.kill_every_s or self.storage_outages or self.slow_copies
                    or self.leavers)


@dataclass(slots=True)
class Report:
    """What happened, and what the checks found."""

    updates: int = 0
    attempts: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    texts_sent: int = 0
    texts_delivered_once: int = 0
    texts_lost: list[str] = field(default_factory=list)
    """Not delivered, and the sender was not told."""
    not_delivered_told: list[str] = field(default_factory=list)
    """Not delivered because the chat ended first, and the sender was told so."""
    doubled: list[str] = field(default_factory=list)
    """Reached the recipient more than once, with no kill to explain it."""
    misrouted: list[str] = field(default_factory=list)
    """Reached the recipient in a later chat than the one it was sent in (or someone it
    was not sent to): there it seems to come from the new partner."""
    after_chat_ended: list[str] = field(default_factory=list)
    """Reached the recipient after its chat ended, before they were in another: a copy on
    its way when the chat ended, or asked for on a view of the chat read just before."""
    duplicates_in_send_record_window: list[str] = field(default_factory=list)
    texts_cut_by_403: int = 0
    out_of_order: list[str] = field(default_factory=list)
    updates_given_up: list[int] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    outages: int = 0
    violations: list[str] = field(default_factory=list)
    pairs_made: int = 0
    left_mid_chat: int = 0
    copies_slowed: int = 0
    copies_held: int = 0
    albums_sent: int = 0
    albums_whole: int = 0
    """Reached the partner once, every item, in order."""
    albums_split: list[str] = field(default_factory=list)
    """Whole, but as two albums or more: Telegram delivered an item only after the flush
    had begun (a slow or failing earlier update held the chat's queue), and later items
    go into a following album, by design."""
    albums_not_delivered_told: int = 0
    albums_broken: list[str] = field(default_factory=list)
    """Partly delivered, out of order, split, doubled with no kill to explain it, or not
    delivered with the sender not told."""
    albums_doubled_by_a_kill: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing doubled (beyond the send-record window), no violation."""
        return not (self.texts_lost or self.doubled or self.misrouted or self.out_of_order
                    or self.updates_given_up or self.violations or self.albums_broken)

    def summary(self) -> str:
        """The numbers, for a test failure or the benchmark's output."""
        redelivered = self.attempts - self.updates
        return (
            f"{self.updates} updates in {self.seconds:.1f} s "
            f"({self.updates / max(self.seconds, 1e-9):.0f}/s), {self.attempts} attempts "
            f"({redelivered} re-deliveries), answers {dict(self.answers)}; "
            f"{self.texts_sent} texts: {self.texts_delivered_once} exactly once, "
            f"{len(self.doubled)} doubled, {len(self.misrouted)} misrouted, "
            f"{len(self.after_chat_ended)} reached the recipient between its chat's end and "
            f"any later chat, "
            f"{len(self.not_delivered_told)} not delivered (sender told), "
            f"{len(self.texts_lost)} not delivered (sender not told: lost), "
            f"{len(self.duplicates_in_send_record_window)} doubled by a kill between send and "
            f"record, {self.texts_cut_by_403} not sent after the partner became unreachable, "
            f"{len(self.out_of_order)} out of order; {self.pairs_made} pairs made, "
            f"{self.left_mid_chat} left mid-chat; {self.copies_slowed} copies slowed past the "
            f"delivery timeout, {self.copies_held} copies to leavers held by a 429; "
            f"{len(self.kills)} workers killed, {self.outages} storage outages; "
            f"{len(self.updates_given_up)} updates given up; {self.albums_sent} albums: "
            f"{self.albums_whole} whole once ({len(self.albums_split)} of them split), "
            f"{self.albums_not_delivered_told} not delivered "
            f"(sender told), {self.albums_doubled_by_a_kill} doubled by a kill, broken: "
            f"{self.albums_broken[:3]}; violations: {self.violations[:5]}"
            + (f"; misrouted: {self.misrouted[:3]}" if self.misrouted else "")
            + (f"; between chats: {self.after_chat_ended[:3]}" if self.after_chat_ended
               else ""))


class Instances:
    """functions-framework servers of main.py, each with several gunicorn workers."""

    def __init__(self, env: Mapping[str, str], load: Load, log_dir: Path,
                 secret: str, first_port: int | None = None) -> None:
        self.secret = secret
        self.urls: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs = []
        for index in range(load.instances):
            port = first_port if index == 0 and first_port else _free_port()
            log_file = (log_dir / f"instance{index}.log").open("wb")
            self._logs.append(log_file)
            self.processes.append(subprocess.Popen(  # noqa: S603 - our own interpreter
                [sys.executable, "-m", "functions_framework", "--target", "webhook",
                 "--source", str(ROOT / "main.py"), "--host", "127.0.0.1",
                 "--port", str(port)],
                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, **env, "WORKERS": str(load.workers_per_instance),
                     "THREADS": str(load.threads_per_worker), "PYTHONUNBUFFERED": "1"}))
            self.urls.append(f"http://127.0.0.1:{port}/")
        for url, process in zip(self.urls, self.processes, strict=True):
            _wait_until_up(url, process)
        # Warm, as instances serving traffic are: each worker's first request makes its
        # store client (lazily, once), which on a loaded machine may outlast a call's
        # deadline (a 503, re-delivered). The runs measure warm instances.
        for index, url in enumerate(self.urls):
            _warm_up(url, secret, load.workers_per_instance * load.threads_per_worker, index)

    def workers(self) -> list[int]:
        """The pids of every instance's worker processes (gunicorn's master's children)."""
        pids = []
        for process in self.processes:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children")
                         .read_text().split()]
        return pids

    def kill_a_worker(self, rng: random.Random) -> bool:
        """SIGKILL one worker, mid-request if it has one; its master starts another."""
        workers = self.workers()
        if not workers:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(rng.choice(workers), signal.SIGKILL)
        return True

    def stop(self) -> None:
        """Stop every instance and its workers."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log_file in self._logs:
            log_file.close()


Pending = JsonObject | Callable[[], JsonObject]
"""An update, or what makes it when its turn comes (a button press needs its message)."""


@dataclass(slots=True)
class _Chat:
    """One user's private chat with the bot, as Telegram's delivery queue sees it."""

    pending: collections.deque[Pending] = field(default_factory=collections.deque)
    in_flight: bool = False
    ready_at: float = 0.0
    attempt: int = 0
    first_try: float = 0.0


class Telegram:
    """Delivers updates as Telegram does: per chat in order, one in flight, re-delivered."""

    def __init__(self, instances: Instances, load: Load, report: Report, seed: int) -> None:
        self._instances = instances
        self._load = load
        self._report = report
        self._rng = random.Random(seed)  # noqa: S311 - a load balancer, not a secret
        self._chats: dict[int, _Chat] = collections.defaultdict(_Chat)
        self._lock = threading.Condition()
        self._sessions = threading.local()

    def enqueue(self, chat_id: int, update: Pending) -> None:
        """Queue an update behind the chat's earlier ones."""
        with self._lock:
            self._chats[chat_id].pending.append(update)
            self._report.updates += 1
            self._lock.notify_all()

    def drain(self) -> None:
        """Deliver everything queued; returns when every update got a 2xx or was given up."""
        threads = [threading.Thread(target=self._work, daemon=True)
                   for _ in range(self._load.max_connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _next(self) -> tuple[int, JsonObject] | None:
        with self._lock:
            while True:
                now = time.monotonic()
                waiting = [(c.ready_at, chat_id) for chat_id, c in self._chats.items()
                           if c.pending and not c.in_flight]
                busy = any(c.in_flight for c in self._chats.values())
                if not waiting and not busy:
                    return None
                ready = [chat_id for at, chat_id in waiting if at <= now]
                if ready:
                    chat_id = self._rng.choice(ready)
                    chat = self._chats[chat_id]
                    chat.in_flight = True
                    if chat.attempt == 0:
                        chat.first_try = now
                    update = chat.pending[0]
                    if callable(update):
                        update = chat.pending[0] = update()
                    return chat_id, update
                soonest = min((at for at, _ in waiting), default=now + 0.5)
                self._lock.wait(max(0.005, min(0.5, soonest - now)))

    def _work(self) -> None:
        while (item := self._next()) is not None:
            chat_id, update = item
            try:
                answer = self._post(update)
            except Exception as error:  # noqa: BLE001 - counted; the chat must not stall
                answer = f"client_error:{type(error).__name__}"
            with self._lock:
                chat = self._chats[chat_id]
                chat.in_flight = False
                self._report.attempts += 1
                self._report.answers[answer] += 1
                if answer == "200":
                    chat.pending.popleft()
                    chat.attempt = 0
                    chat.ready_at = 0.0
                elif time.monotonic() - chat.first_try > self._load.give_up_after_s:
                    self._report.updates_given_up.append(int(update["update_id"]))
                    chat.pending.popleft()
                    chat.attempt = 0
                else:
                    chat.attempt += 1
                    backoff = min(self._load.max_backoff_s,
                                  self._load.first_backoff_s * 2 ** (chat.attempt - 1))
                    chat.ready_at = time.monotonic() + backoff * (0.5 + self._rng.random())
                self._lock.notify_all()

    def _post(self, update: JsonObject) -> str:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        url = self._rng.choice(self._instances.urls)
        try:
            response = session.post(
                url, json=update, timeout=self._load.delivery_timeout_s,
                headers={"X-Telegram-Bot-Api-Secret-Token": self._instances.secret})
        except requests.Timeout:
            return "timeout"
        except requests.RequestException:
            # Refused, reset, or cut mid-answer (a worker killed while it replied).
            session.close()
            self._sessions.session = requests.Session()
            return "connection_error"
        return str(response.status_code)


StateReader = Callable[[int], UserState | None]
RecordsReader = Callable[[int], UserRecords | None]


class Simulation:
    """One run: users pair, talk and move on, round after round, while faults happen."""

    def __init__(
        self, api: FakeBotApi, env: Mapping[str, str], load: Load, faults: Faults,
        read_state: StateReader, work_dir: Path, *,
        storage_down: Callable[[], None] | None = None,
        storage_up: Callable[[], None] | None = None, seed: int = 1,
        read_records: RecordsReader | None = None,
    ) -> None:
        self.api = api
        self.env = {**env, "TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url}
        self.load = load
        self.faults = faults
        self.read_state = read_state
        self.read_records = read_records
        """When each chat started and ended: without it, misrouting is not checked."""
        self.work_dir = work_dir
        self.storage_down = storage_down
        self.storage_up = storage_up
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self.report = Report()
        self.users = [api.user(500_000 + i, f"User{i}",
                               language_code=load.languages[i % len(load.languages)])
                      for i in range(load.users)]
        self.sent: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
        """Per recipient: (sender, text) the senders meant for them, in sending order."""
        self.update_of: dict[str, int] = {}
        """The update id of each simulated text, to find it in the instances' logs."""
        self.sent_at: dict[str, float] = {}
        """When each simulated text was sent (time.time(), the store's clock)."""
        self._slow_rule: FailureRule | None = None
        self.albums: list[tuple[int, int, str, int, int]] = []
        """(sender, recipient, name, items, first item's message id) of each album sent."""
        self._tasks: FakeCloudTasks | None = None

    def run(self) -> Report:
        """Run every round, then check; the report says what was found."""
        started = time.monotonic()
        secret = self.env["WEBHOOK_SECRET"]
        # Albums are flushed as on Google Cloud: a Cloud Task calls an instance back, from a
        # queue that retries faster than production's, and like it outlasts a flush's claim.
        timeout = float(self.env.get("REQUEST_TIMEOUT_SECONDS", claims.REQUEST_TIMEOUT_S))
        if not QUEUE_RETRIES.outlasts(claims.lease_for(timeout)):
            raise ValueError(f"the album queue gives up within a claim's lease ({timeout} s)")
        self._tasks = FakeCloudTasks(QUEUE_RETRIES)
        port = _free_port()
        env = {**self.env, "CLOUD_TASKS_ENDPOINT": self._tasks.url,
               "ALBUM_QUEUE": "projects/demo-simulation/locations/europe-west1/queues/albums",
               "ALBUM_FLUSH_URL": f"http://127.0.0.1:{port}/"}
        try:
            instances = Instances(env, self.load, self.work_dir, secret, first_port=port)
        except BaseException:
            self._tasks.stop()
            raise
        stop_faults = threading.Event()
        try:
            self._inject_api_faults()
            faults = threading.Thread(target=self._fault_loop, args=(instances, stop_faults),
                                      daemon=True)
            faults.start()
            for round_number in range(self.load.rounds):
                self._round(instances, round_number)
            stop_faults.set()
            faults.join()
            if self._slow_rule is not None:
                self.report.copies_slowed = self._slow_rule.hits
            self.api.clear_failures()
        finally:
            stop_faults.set()
            instances.stop()
            self._tasks.stop()
        self.report.seconds = time.monotonic() - started
        self._check_texts()
        self._check_albums()
        self._check_invariants()
        return self.report

    # -- the workload --------------------------------------------------------------------

    def _round(self, instances: Instances, round_number: int) -> None:
        telegram = Telegram(instances, self.load, self.report, seed=round_number)
        for user in self.users:
            telegram.enqueue(user.id, user.command("find_chat"))
        telegram.drain()
        partners = {}
        for user in self.users:
            state = self.read_state(user.id)
            if state is not None and state.chat is not None:
                partners[user.id] = state.chat.partner_id
        self.report.pairs_made += len(partners) // 2
        leave_at, held = self._choose_leavers(partners)
        for index in range(self.load.messages_per_user):
            for user in self.users:
                partner = partners.get(user.id)
                if partner is None or leave_at.get(user.id, index + 1) < index:
                    continue
                if leave_at.get(user.id) == index:
                    self._leave(telegram, user)
                    continue
                text = f"u{user.id} r{round_number} m{index}"
                self.sent[partner].append((user.id, text))
                self.report.texts_sent += 1
                update = user.text(text)
                self.update_of[text] = int(update["update_id"])
                self.sent_at[text] = time.time()
                telegram.enqueue(user.id, update)
                if index == 1 and self._sends_album(user, round_number):
                    self._send_album(telegram, user, partner, round_number)
        telegram.drain()
        if self._tasks is not None and self.albums:
            # Every album's task has run before the chats move on.
            self._tasks.wait_idle(self.load.give_up_after_s)
        for rule in held:
            self.report.copies_held += rule.hits
            self.api.forget(rule)
        # Some move on to someone new, some leave: the next round pairs them afresh.
        for user in self.users:
            if user.id in partners and self.rng.random() < 0.5:
                telegram.enqueue(user.id, user.command("next"))
        telegram.drain()

    def _sends_album(self, user: FakeUser, round_number: int) -> bool:
        every = self.load.album_every
        return every > 0 and (self.users.index(user) + round_number) % every == 0

    def _send_album(self, telegram: Telegram, user: FakeUser, partner: int,
                    round_number: int) -> None:
        """An album of 2-4 items, each captioned with its place, item by item."""
        name = f"u{user.id} r{round_number} album"
        count = 2 + (user.id + round_number) % 3
        kind = ("photo", "video", "document", "audio")[(user.id + round_number) % 4]
        updates = user.album(kind, count, captions=[f"{name} a{n}" for n in range(1, count + 1)])
        self.albums.append((user.id, partner, name, count,
                            int(updates[0]["message"]["message_id"])))
        self.report.albums_sent += 1
        for update in updates:
            telegram.enqueue(user.id, update)

    def _choose_leavers(self, partners: Mapping[int, int]
                        ) -> tuple[dict[int, int], list[FailureRule]]:
        """Who leaves mid-chat, before which of their texts; the 429s on copies to them."""
        leave_at: dict[int, int] = {}
        held: list[FailureRule] = []
        if not self.faults.leavers:
            return leave_at, held
        for user_id, partner in sorted(partners.items()):
            if user_id > partner or self.rng.random() >= self.faults.leavers:
                continue
            leaver = self.rng.choice((user_id, partner))
            # After at least one text, so that the partner's texts are on their way.
            leave_at[leaver] = self.rng.randint(1, max(1, self.load.messages_per_user - 1))
            held.append(self.api.fail(
                "copyMessage", chat_id=leaver, status=429, retry_after=self.rng.randint(1, 3),
                times=None, share=self.faults.held_copies))
        return leave_at, held

    def _leave(self, telegram: Telegram, user: FakeUser) -> None:
        """/next, or /exit_chat and Yes, by turns; the partner's texts keep coming."""
        self.report.left_mid_chat += 1
        if self.report.left_mid_chat % 2:
            telegram.enqueue(user.id, user.command("next"))
            return
        telegram.enqueue(user.id, user.command("exit_chat"))

        def press_yes() -> JsonObject:
            # Made when its turn comes: the confirmation exists once /exit_chat was answered.
            for message in reversed(user.inbox()):
                for row in message.get("reply_markup", {}).get("inline_keyboard", []):
                    if any(b.get("callback_data") == keyboards.EXIT_YES for b in row):
                        return user.press(message["message_id"], keyboards.EXIT_YES)
            return user.command("next")

        telegram.enqueue(user.id, press_yes)

    # -- faults --------------------------------------------------------------------------

    def _inject_api_faults(self) -> None:
        f = self.faults
        timeout = float(self.env.get("TELEGRAM_TIMEOUT_SECONDS", "10"))
        if f.api_403:
            self.api.fail("copyMessage", status=403, times=None, share=f.api_403)
        if f.slow_copies:
            # Telegram is slow but does it: a 200, after the simulated delivery timeout.
            self._slow_rule = self.api.fail("copyMessage", status=200, delay=f.slow_s,
                                            times=None, share=f.slow_copies)
        if f.api_timeout:
            # Hangs past the bot's read timeout, then fails: Telegram never did it.
            self.api.fail(status=500, times=None, delay=timeout + 1, share=f.api_timeout)
        if f.api_429:
            self.api.fail(status=429, retry_after=1, times=None, share=f.api_429)
        if f.api_5xx:
            self.api.fail(status=502, description="Bad Gateway", times=None, share=f.api_5xx)

    def _fault_loop(self, instances: Instances, stop: threading.Event) -> None:
        outages_left = self.faults.storage_outages
        next_kill = time.monotonic() + (self.faults.kill_every_s or 1e9)
        next_outage = time.monotonic() + 2.0
        while not stop.wait(0.05):
            now = time.monotonic()
            if self.faults.kill_every_s and now >= next_kill:
                if instances.kill_a_worker(self.rng):
                    self.report.kills.append(time.time())
                next_kill = now + self.faults.kill_every_s * (0.5 + self.rng.random())
            if outages_left and now >= next_outage and self.storage_down and self.storage_up:
                self.storage_down()
                stop.wait(self.faults.outage_s)
                self.storage_up()
                self.report.outages += 1
                outages_left -= 1
                next_outage = time.monotonic() + 4.0

    # -- the checks ----------------------------------------------------------------------

    def _received(self, recipient: int) -> list[tuple[str, float, float]]:
        """The simulated texts that reached ``recipient``, in the order they arrived.

        Each with when the bot asked for its copy and when the copy was made.
        """
        received = []
        for m in self.api.messages(recipient):
            if m.get("from", {}).get("id") == self.api.bot_user["id"] \
                    and _SIMULATED_TEXT.fullmatch(m.get("text", "")):
                _, made, asked = self.api.arrivals[(recipient, m["message_id"])]
                received.append((str(m["text"]), asked, made))
        return received

    def _check_texts(self) -> None:
        copies, refused = self._copies()
        unexplained: list[str] = []
        for recipient, expected in self.sent.items():
            received: collections.Counter[str] = collections.Counter()
            got = [text for text, _, _ in self._received(recipient)]
            for text in got:
                received[text] += 1
            # One stream per sender and round: a round's texts go to one chat.
            streams: dict[tuple[int, str], list[str]] = collections.defaultdict(list)
            for sender, text in expected:
                streams[(sender, text.split(" ")[1])].append(text)
            for (sender, round_tag), texts in streams.items():
                mine = [t for t in got if t.startswith(f"u{sender} {round_tag} ")]
                # The chat ended by a 403 on a copy of this round, in either direction.
                cut = any(t.startswith((f"u{sender} {round_tag} ", f"u{recipient} {round_tag} "))
                          for t in refused)
                unexplained += self._check_one_stream(recipient, sender, texts, mine, received,
                                                      copies, cut)
        self._check_told(unexplained)
        self._check_routes()
        limit = len(self.report.kills) * self.load.threads_per_worker
        if len(self.report.duplicates_in_send_record_window) > limit:
            self.report.violations.append(
                f"{len(self.report.duplicates_in_send_record_window)} duplicates put down to "
                f"kills, more than {limit} requests the killed workers can have had in flight")

    def _check_one_stream(self, recipient: int, sender: int, texts: list[str],
                          got: list[str], received: collections.Counter[str],
                          copies: dict[str, list[float]], cut_by_403: bool) -> list[str]:
        """Count one sender's texts of a round; the missing ones a 403 does not explain."""
        first_seen = list(dict.fromkeys(got))
        positions = [texts.index(t) for t in first_seen if t in texts]
        if positions != sorted(positions):
            self.report.out_of_order.append(f"u{sender}->u{recipient}")
        for text in texts:
            count = received[text]
            if count == 1:
                self.report.texts_delivered_once += 1
            elif count > 1:
                if self._doubled_by_a_kill(copies.get(text, [])):
                    self.report.duplicates_in_send_record_window.append(text)
                else:
                    self.report.doubled.append(text)
        missing = [t for t in texts if received[t] == 0]
        # A prefix arrived and the rest was never sent: the partner became unreachable
        # (a 403 on a copy of this round), which ends the chat.
        delivered = [t for t in texts if received[t] > 0]
        if missing and cut_by_403 and texts[:len(delivered)] == delivered:
            self.report.texts_cut_by_403 += len(missing)
            return []
        return missing

    def _check_albums(self) -> None:
        """Each album reached the partner once, whole, in order (as one album), or nowhere.

        Nowhere only if its sender was told (a notice after its first item).
        """
        # Besides the notices of a text: the partner blocked the bot, or the queue's last
        # attempt gave the album up (Telegram refused it all along) and said so.
        notices = self._notice_texts() | {
            Catalog().for_language(language)(key) for language in Catalog().languages()
            for key in ("partner.unreachable", "relay.failed")}
        for sender, recipient, name, count, first_id in self.albums:
            copies = [m for m in self.api.messages(recipient)
                      if str(m.get("caption", "")).startswith(name + " a")]
            captions = [str(m["caption"]) for m in copies]
            expected = [f"{name} a{n}" for n in range(1, count + 1)]
            if captions == expected:
                self.report.albums_whole += 1
                if len({m.get("media_group_id") for m in copies}) > 1:
                    self.report.albums_split.append(name)
            elif not copies:
                told = any(m.get("from", {}).get("id") == self.api.bot_user["id"]
                           and m.get("text") in notices and m["message_id"] > first_id
                           for m in self.api.messages(sender))
                if told:
                    self.report.albums_not_delivered_told += 1
                else:
                    self.report.albums_broken.append(f"{name}: lost")
            elif captions == expected * (len(captions) // count) and self.report.kills:
                self.report.albums_doubled_by_a_kill += 1
            else:
                self.report.albums_broken.append(f"{name}: {len(copies)} of {count} items")

    def _check_told(self, missing: list[str]) -> None:
        """A text that never arrived is a loss unless its sender was told it went nowhere.

        The bot's notice does not name the message, so each notice in the sender's chat
        after the text accounts for one text at most (matched earliest first).
        """
        notices = self._notice_texts()
        by_sender: dict[int, list[str]] = collections.defaultdict(list)
        for text in missing:
            by_sender[int(text.split(" ")[0][1:])].append(text)
        for sender, texts in by_sender.items():
            ids: dict[str, int] = {}
            told: list[int] = []
            for message in self.api.messages(sender):
                author = message.get("from", {}).get("id")
                if author == sender and message.get("text") in texts:
                    ids[message["text"]] = message["message_id"]
                elif author == self.api.bot_user["id"] and message.get("text") in notices:
                    told.append(message["message_id"])
            for text in sorted(texts, key=lambda t: ids.get(t, 0)):
                notice = next((n for n in told if n > ids.get(text, 0)), None)
                if notice is None:
                    self.report.texts_lost.append(text)
                else:
                    told.remove(notice)
                    self.report.not_delivered_told.append(text)

    @staticmethod
    def _notice_texts() -> set[str]:
        """What the bot tells a sender whose message reached nobody, in every language."""
        catalog = Catalog()
        return {catalog.for_language(language)(key) for language in catalog.languages()
                for key in ("relay.chat_ended", "relay.idle", "relay.waiting")}

    def _check_routes(self) -> None:
        """No copy reached its recipient in a later chat; between two chats is counted apart.

        The chat is the recipient's latest chat with the sender that started before the
        text was sent; the fake's clock says when the bot asked for the copy and when it
        was made, the store's when the chat ended (both time.time() on this machine).
        """
        if self.read_records is None:
            return
        meant_for = {text: recipient for recipient, sent in self.sent.items()
                     for _, text in sent}
        for user in self.users:
            arrivals = self._received(user.id)
            if not arrivals:
                continue
            records = self.read_records(user.id)
            chats = records.chats if records is not None else []
            for text, asked, at in arrivals:
                sender = int(text.split(" ")[0][1:])
                if meant_for.get(text) != user.id:
                    self.report.misrouted.append(f"{text} reached u{user.id}, not its partner")
                    continue
                chat = _chat_of(chats, sender, self.sent_at[text])
                if chat is None or not chat.started_at <= at:
                    self.report.misrouted.append(f"{text} reached u{user.id} before the chat")
                elif chat.ended_at is not None and at > chat.ended_at:
                    later = any(chat.started_at < c.started_at <= at for c in chats)
                    found = (f"{text} reached u{user.id} {at - chat.ended_at:.3f} s after the "
                             f"chat ended (asked for {asked - chat.ended_at:+.3f} s from its "
                             f"end)" + (", in a later chat" if later else ""))
                    (self.report.misrouted if later
                     else self.report.after_chat_ended).append(found)

    def _copies(self) -> tuple[dict[str, list[float]], set[str]]:
        """When each text was copied (by text), and the texts whose copy got a 403."""
        by_id: dict[tuple[Any, Any], str] = {}
        for user in self.users:
            for message in self.api.messages(user.id):
                if message.get("from", {}).get("id") == user.id and "text" in message:
                    by_id[(user.id, message["message_id"])] = message["text"]
        times: dict[str, list[float]] = collections.defaultdict(list)
        refused: set[str] = set()
        for call in self.api.calls:
            if call.method != "copyMessage":
                continue
            text = by_id.get((call.params.get("from_chat_id"), call.params.get("message_id")))
            if text is None:
                continue
            if call.status == 200:
                times[text].append(call.at)
            elif call.status == 403:
                refused.add(text)
        return times, refused

    def _doubled_by_a_kill(self, copy_times: list[float]) -> bool:
        """A worker was killed just after a copy was made, before it recorded the link.

        Telegram re-delivers only after an attempt failed; a relay that made its copy
        fails only if its process dies before the copy's link is written (the link makes
        the re-delivery a duplicate). The record follows the copy within milliseconds,
        or seconds when the store is slow or away, so the kill must follow the first copy
        closely; ``_check_texts`` also bounds how many duplicates kills can explain.
        """
        if len(copy_times) < 2:
            return False
        first = min(copy_times)
        # The fake records a copy when it answers; the kill may land while the answer is
        # on its way, just before.
        window = self.faults.outage_s + 2.0
        return any(first - 0.5 <= kill <= first + window for kill in self.report.kills)

    def _check_invariants(self) -> None:
        states = {user.id: self.read_state(user.id) for user in self.users}
        waiting_by_language: collections.Counter[str] = collections.Counter()
        for user_id, state in states.items():
            if state is None:
                self.report.violations.append(f"user {user_id} unknown to the store")
                continue
            if state.chat is not None and state.waiting:
                self.report.violations.append(f"user {user_id} waits and chats at once")
            if state.chat is not None:
                partner = states.get(state.chat.partner_id)
                if partner is None or partner.chat is None \
                        or partner.chat.partner_id != user_id \
                        or partner.chat.chat_id != state.chat.chat_id:
                    self.report.violations.append(f"user {user_id}'s chat is not mutual")
            if state.waiting:
                waiting_by_language[state.language] += 1
        # With RECENT_PARTNERS=0 everyone of a language is compatible: at most one waits.
        if self.env.get("RECENT_PARTNERS") == "0":
            for language, count in waiting_by_language.items():
                if count > 1:
                    self.report.violations.append(
                        f"{count} users wait in {language} although they could be paired")


def _chat_of(chats: list[ChatRecord], partner: int, at: float) -> ChatRecord | None:
    """The latest chat with ``partner`` that had started by ``at``."""
    started = [c for c in chats if c.partner_id == partner and c.started_at <= at]
    return max(started, key=lambda c: c.started_at, default=None)


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only the simulator needs it

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


WARM_UP_USER = 2**40
"""Warm-up requests come from users of their own (ids from here), never simulated ones."""


def _warm_up(url: str, secret: str, requests_at_once: int, instance: int) -> None:
    """/help from that many users at once, each until answered 200 (or 60 s)."""
    def ask(number: int) -> None:
        user = {"id": WARM_UP_USER + instance * 1_000 + number, "is_bot": False,
                "first_name": "Warm-up"}
        update = {"update_id": user["id"], "message": {
            "message_id": 1, "date": int(time.time()), "from": user, "text": "/help",
            "chat": {"id": user["id"], "type": "private", "first_name": "Warm-up"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}]}}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.post(url, json=update, timeout=30, headers={
                        "X-Telegram-Bot-Api-Secret-Token": secret}).status_code == 200:
                    return
            time.sleep(0.2)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(requests_at_once)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"an instance exited at start: {url}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"an instance did not start: {url}")
