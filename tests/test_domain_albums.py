"""The album rule without a store: collecting items, claiming a batch, sending it once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from messagine.domain import albums, claims
from messagine.domain.albums import Album, BatchState, Item, Verdict

KEY = albums.album_key(10, 20, "13579")


def _add(album: Album | None, message_id: int, now: float = 100.0,
         update_id: int = 1) -> tuple[Album | None, albums.Added]:
    return albums.add_item(album, KEY, 10, 20, Item(message_id, "photo"), now, update_id)


def _collect(*message_ids: int, now: float = 100.0) -> Album:
    album = None
    for message_id in message_ids:
        stored, _ = _add(album, message_id, now)
        album = stored or album
    assert album is not None
    return album


def test_the_key_is_a_safe_document_id_whatever_the_group_id_holds():
    assert albums.album_key(1, 2, "a/b") != albums.album_key(1, 2, "a/c")
    assert "/" not in albums.album_key(1, 2, "../../x")
    assert albums.album_key(1, 2, "x") != albums.album_key(1, 3, "x")


def test_the_first_item_opens_a_batch_and_asks_for_a_flush_the_next_do_not():
    album, added = _add(None, 5)
    assert added == albums.Added(1, schedule=True, duplicate=False)
    album, added = _add(album, 6)
    assert added == albums.Added(1, schedule=False, duplicate=False)
    assert album is not None
    assert [i.message_id for i in album.batches[0].items] == [5, 6]


def test_an_item_seen_again_changes_nothing_and_schedules_while_its_batch_collects():
    album = _collect(5, 6)
    stored, added = _add(album, 5)
    assert stored is None and added.duplicate and added.schedule
    _, claimed = albums.claim(album, 1, "flush", now=200.0)
    sending, _ = albums.claim(album, 1, "flush", now=200.0)
    assert claimed.verdict is Verdict.SEND
    stored, added = _add(sending, 6)
    assert stored is None and added.duplicate and not added.schedule


def test_a_flush_waits_while_items_still_come_then_claims_once():
    album = _collect(5, 6, now=100.0)
    assert albums.claim(album, 1, "a", now=100.5)[1].verdict is Verdict.WAIT
    stored, claimed = albums.claim(album, 1, "a", now=102.0)
    assert claimed.verdict is Verdict.SEND and not claimed.resumed
    assert claimed.batch is not None and [i.message_id for i in claimed.batch.items] == [5, 6]
    assert albums.claim(stored, 1, "b", now=103.0)[1].verdict is Verdict.BUSY
    finished, mine = albums.finish(stored, 1, "a")
    assert mine and finished is not None
    assert finished.batches[0].state is BatchState.SENT
    assert albums.claim(finished, 1, "b", now=104.0)[1].verdict is Verdict.DONE
    assert albums.finish(stored, 1, "b") == (None, False)


def test_a_flush_that_died_is_taken_over_when_its_lease_ends():
    stored, _ = albums.claim(_collect(5), 1, "dead", now=200.0)
    assert albums.claim(stored, 1, "next", now=200.0 + albums.LEASE_S - 1)[1].verdict \
        is Verdict.BUSY
    taken, claimed = albums.claim(stored, 1, "next", now=200.0 + albums.LEASE_S + 1)
    assert claimed.verdict is Verdict.SEND and claimed.resumed
    assert albums.finish(taken, 1, "dead") == (None, False)  # the dead one lost it


def test_a_released_claim_can_be_claimed_again():
    stored, _ = albums.claim(_collect(5), 1, "a", now=200.0)
    released, mine = albums.release(stored, 1, "a")
    assert mine and albums.claim(released, 1, "b", now=201.0)[1].verdict is Verdict.SEND
    assert albums.release(stored, 1, "b") == (None, False)


def test_items_after_a_flush_started_go_into_the_next_batch():
    sending, _ = albums.claim(_collect(5, 6), 1, "a", now=200.0)
    later, added = _add(sending, 7, now=200.5, update_id=9)
    assert added == albums.Added(2, schedule=True, duplicate=False)
    assert later is not None and later.batch(2) is not None
    assert [i.message_id for i in later.batch(1).items] == [5, 6]  # type: ignore[union-attr]
    assert later.batch(2).update_id == 9  # type: ignore[union-attr]


def test_an_eleventh_item_opens_the_next_batch_and_a_full_batch_is_sent_at_once():
    album = _collect(*range(1, 11))
    assert albums.claim(album, 1, "a", now=100.0)[1].verdict is Verdict.SEND
    _, added = _add(album, 11)
    assert added.batch == 2 and added.schedule


def test_claims_of_batches_that_do_not_exist_are_unknown():
    assert albums.claim(None, 1, "a", 0.0) == (None, albums.Claimed(Verdict.UNKNOWN))
    assert albums.claim(_collect(5), 2, "a", 500.0)[1].verdict is Verdict.UNKNOWN
    assert albums.finish(None, 1, "a") == (None, False)


@given(st.lists(st.integers(1, 2**31), min_size=1, max_size=40),
       st.lists(st.booleans(), min_size=40, max_size=40))
def test_every_item_is_in_exactly_one_batch_in_order_and_no_batch_is_over_ten(
        ids: list[int], flush_between: list[bool]):
    album: Album | None = None
    now = 0.0
    for message_id, flush in zip(ids, flush_between, strict=False):
        now += 0.1
        stored, _ = _add(album, message_id, now)
        album = stored or album
        if flush and album is not None:
            last = album.batches[-1]
            stored, _ = albums.claim(album, last.number, "x", now + 10)
            album = stored or album
    assert album is not None
    seen = [i.message_id for b in album.batches for i in b.items]
    assert sorted(seen) == sorted(set(ids))
    for batch in album.batches:
        ordered = [i.message_id for i in batch.items]
        assert ordered == sorted(ordered) and 1 <= len(ordered) <= albums.MAX_ITEMS
    assert [b.number for b in album.batches] == list(range(1, len(album.batches) + 1))


# -- the flush's retries ---------------------------------------------------------------------

def test_retries_wait_as_cloud_tasks_documents():
    """Cloud Tasks' own example: min 10 s, max 300 s, 3 doublings."""
    example = albums.Retries(attempts=9, min_backoff_s=10, max_backoff_s=300, max_doublings=3)
    assert [example.delay(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]
    assert example.window_s() == sum([10, 20, 40, 80, 160, 240, 300, 300])
    assert example.queue_flags() == \
        "--max-attempts=9 --min-backoff=10s --max-backoff=300s --max-doublings=3"


def test_the_production_retries_outlast_a_claim_at_the_longest_request_timeout():
    longest = claims.lease_for(claims.MAX_REQUEST_TIMEOUT_S)
    assert albums.RETRIES.outlasts(longest)
    assert albums.RETRIES.attempts == albums.FLUSH_ATTEMPTS
    # The schedule the simulator once ran (every 0.5 s, 40 times) did not: it gave up.
    assert not albums.Retries(40, 0.5, 0.5, 0).outlasts(claims.LEASE_S)


@given(st.integers(1, 60), st.floats(0.01, 100), st.floats(0.01, 4000), st.integers(0, 16))
def test_a_retry_never_waits_less_than_the_one_before_nor_past_the_cap(
        attempts: int, low: float, high: float, doublings: int):
    retries = albums.Retries(attempts, min(low, high), max(low, high), doublings)
    delays = [retries.delay(n) for n in range(1, attempts + 1)]
    assert all(retries.min_backoff_s <= d <= retries.max_backoff_s for d in delays)
    assert delays == sorted(delays)
