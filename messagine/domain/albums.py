"""Albums: a media group's items collected one update at a time and sent once, whole.

Telegram delivers each item of an album as its own update and never says how many will
come, so the items are kept in an album record (one per chat, sender and media_group_id)
and sent together once no item has come for ``QUIET_S``. A record holds numbered batches:
items go into the open (collecting) batch; once a flush has claimed it (sending), a later
item opens the next batch, which is flushed on its own. A flush claims its batch with a
lease, so two flushes never send it both, and one that died is taken over when its lease
ends. An item seen again (a re-delivered update) changes nothing. Pure functions: each
backend applies them to the record inside its own atomic read-and-write.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace

from messagine.domain import claims

QUIET_S = 1.5
"""No new item for this long: the batch is taken as complete (Telegram sends an album's
items within a fraction of a second of each other)."""
FIRST_FLUSH_S = 2.0
"""The first flush is tried this long after a batch's first item."""
LEASE_S = claims.LEASE_S
"""A flush holding its claim longer died: a flush is one request, so it is leased as an
update's claim is (``claims.lease_for`` the request timeout; the relay is given that)."""
MAX_ITEMS = 10
"""Telegram's largest album: an eleventh item opens the next batch."""


@dataclass(frozen=True, slots=True)
class Retries:
    """How a batch's flush is tried again: Cloud Tasks' retry config, and the timer's.

    The queue is created with ``queue_flags()`` (cloudbuild.yaml, held equal by a test),
    and the in-process timer waits the same ``delay``s. The last attempt that cannot send
    tells the sender the album did not arrive, so the attempts must outlast a flush that
    died holding its claim: ``outlasts(lease_s)``.
    """

    attempts: int = 40
    min_backoff_s: float = 1.0
    max_backoff_s: float = 20.0
    max_doublings: int = 4

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1: the first retry), as Cloud Tasks does.

        The interval doubles ``max_doublings`` times, then grows linearly by the last
        doubled interval, and never exceeds ``max_backoff_s``.
        """
        doublings = min(retry - 1, self.max_doublings)
        interval = self.min_backoff_s * float(2 ** doublings)
        linear = max(0, retry - 1 - self.max_doublings)
        interval += self.min_backoff_s * float(2 ** self.max_doublings) * linear
        return min(interval, self.max_backoff_s)

    def window_s(self) -> float:
        """From the first attempt to the last."""
        return sum(self.delay(retry) for retry in range(1, self.attempts))

    def outlasts(self, lease_s: float) -> bool:
        """Whether a claim taken at the first attempt ends before the last attempt.

        A flush that died holding it is then taken over by a later attempt, not given up.
        """
        return self.window_s() > lease_s + self.delay(1)

    def queue_flags(self) -> str:
        """The retry flags of ``gcloud tasks queues create``."""
        return (f"--max-attempts={self.attempts} --min-backoff={self.min_backoff_s:g}s "
                f"--max-backoff={self.max_backoff_s:g}s --max-doublings={self.max_doublings}")


RETRIES = Retries()
"""The production schedule: 1, 2, 4, 8, 16, then every 20 s; about 12 minutes in all,
longer than a claim's lease at the longest request timeout the settings allow."""
FLUSH_ATTEMPTS = RETRIES.attempts
"""A batch's flush is tried this often; the last attempt knows it is the last."""


class BatchState(enum.Enum):
    """Where a batch stands."""

    COLLECTING = "collecting"
    SENDING = "sending"
    SENT = "sent"


@dataclass(frozen=True, slots=True)
class Item:
    """One message of an album: its id in the sender's chat and its content type."""

    message_id: int
    content_type: str


@dataclass(frozen=True, slots=True)
class Batch:
    """The items sent together as one album; ``update_id``: the update that opened it."""

    number: int
    items: tuple[Item, ...]
    state: BatchState
    last_item_at: float
    update_id: int
    owner: str = ""
    lease_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Album:
    """The record of one media group of one sender in one chat."""

    key: str
    chat_id: int
    sender_id: int
    batches: tuple[Batch, ...]
    version: int = 0

    def batch(self, number: int) -> Batch | None:
        """Batch ``number``, if there is one."""
        return next((b for b in self.batches if b.number == number), None)

    def _with(self, batch: Batch) -> Album:
        batches = tuple(batch if b.number == batch.number else b for b in self.batches)
        if all(b.number != batch.number for b in self.batches):
            batches = (*batches, batch)
        return replace(self, batches=batches, version=self.version + 1)


def album_key(chat_id: int, sender_id: int, media_group_id: str) -> str:
    """The record's key: safe as a document id whatever ``media_group_id`` holds."""
    digest = hashlib.blake2b(media_group_id.encode("utf-8", "replace"), digest_size=8)
    return f"{chat_id}-{sender_id}-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class Added:
    """What adding an item did: the batch it is in, and whether a flush must be scheduled.

    ``schedule`` is True for the item that opened the batch, and again for an item seen
    before whose batch is still collecting (the attempt that added it may have died before
    it scheduled the flush; scheduling twice is harmless).
    """

    batch: int
    schedule: bool
    duplicate: bool


def add_item(album: Album | None, key: str, chat_id: int, sender_id: int, item: Item,
             now: float, update_id: int) -> tuple[Album | None, Added]:
    """Put ``item`` into the open batch (or a new one); the record to store (None: none)."""
    if album is None:
        album = Album(key, chat_id, sender_id, ())
    for batch in album.batches:
        if any(i.message_id == item.message_id for i in batch.items):
            return None, Added(batch.number, batch.state is BatchState.COLLECTING, True)
    last = album.batches[-1] if album.batches else None
    if (last is not None and last.state is BatchState.COLLECTING
            and len(last.items) < MAX_ITEMS):
        items = tuple(sorted((*last.items, item), key=lambda i: i.message_id))
        return album._with(replace(last, items=items, last_item_at=now)), \
            Added(last.number, False, False)
    number = last.number + 1 if last is not None else 1
    opened = Batch(number, (item,), BatchState.COLLECTING, now, update_id)
    return album._with(opened), Added(number, True, False)


class Verdict(enum.Enum):
    """What a flush must do with its batch."""

    SEND = "send"
    """Claimed: send the items (``resumed``: a flush that held it before died)."""
    WAIT = "wait"
    """Items are still coming: try again after ``QUIET_S``."""
    BUSY = "busy"
    """Another flush holds it: try again later (it will then be sent)."""
    DONE = "done"
    """Sent before: nothing to do."""
    UNKNOWN = "unknown"
    """No such batch (expired, or never made): nothing to do."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A flush's verdict, with the batch it claimed."""

    verdict: Verdict
    batch: Batch | None = None
    resumed: bool = False
    album: Album | None = None


def claim(album: Album | None, number: int, owner: str, now: float,
          quiet_s: float = QUIET_S, lease_s: float = LEASE_S) -> tuple[Album | None, Claimed]:
    """Claim batch ``number`` for ``owner`` to send; the record to store (None: none)."""
    batch = album.batch(number) if album is not None else None
    if album is None or batch is None:
        return None, Claimed(Verdict.UNKNOWN)
    if batch.state is BatchState.SENT:
        return None, Claimed(Verdict.DONE, batch, album=album)
    if batch.state is BatchState.COLLECTING and now - batch.last_item_at < quiet_s \
            and len(batch.items) < MAX_ITEMS:
        return None, Claimed(Verdict.WAIT, batch, album=album)
    if batch.state is BatchState.SENDING and batch.lease_until > now:
        return None, Claimed(Verdict.BUSY, batch, album=album)
    resumed = batch.state is BatchState.SENDING
    taken = replace(batch, state=BatchState.SENDING, owner=owner, lease_until=now + lease_s)
    stored = album._with(taken)
    return stored, Claimed(Verdict.SEND, taken, resumed, stored)


def finish(album: Album | None, number: int, owner: str) -> tuple[Album | None, bool]:
    """Mark ``owner``'s batch sent; False (and nothing stored) if it is not theirs."""
    batch = album.batch(number) if album is not None else None
    if album is None or batch is None or batch.state is not BatchState.SENDING \
            or batch.owner != owner:
        return None, False
    return album._with(replace(batch, state=BatchState.SENT, lease_until=0.0)), True


def release(album: Album | None, number: int, owner: str) -> tuple[Album | None, bool]:
    """Give ``owner``'s claim back (a failure a retry may fix): the batch can be claimed again."""
    batch = album.batch(number) if album is not None else None
    if album is None or batch is None or batch.state is not BatchState.SENDING \
            or batch.owner != owner:
        return None, False
    return album._with(replace(batch, state=BatchState.COLLECTING, owner="",
                               lease_until=0.0)), True


def expires_at(album: Album, keep_s: float = 86_400.0) -> float:
    """When the record may be deleted: a day after its last item.

    Telegram re-sends an update for at most a day, so an item seen later is no re-delivery.
    """
    return max((b.last_item_at for b in album.batches), default=0.0) + keep_s
