"""The album records on every backend: the rule applied atomically, once per change."""

from __future__ import annotations

import threading
import time

from messagine.domain import albums
from messagine.domain.albums import Album, Item, Verdict
from messagine.storage import documents as docs
from messagine.storage.port import Repository

T0 = float(int(time.time()))


def _add(repo: Repository, key: str, message_id: int, now: float = T0) -> albums.Added:
    return repo.change_album(key, lambda a: albums.add_item(
        a, key, 7, 8, Item(message_id, "photo"), now, 1000 + message_id))


def test_a_record_maps_to_a_document_and_back():
    album, _ = albums.add_item(None, "k", 1, 2, Item(3, "video"), T0, 4)
    assert album is not None
    claimed, _ = albums.claim(album, 1, "owner", T0 + 5)
    assert claimed is not None
    assert docs.album("k", docs.album_document(claimed)) == claimed


def test_items_collect_and_a_batch_is_claimed_and_sent_once(repository: Repository):
    key = albums.album_key(7, 8, "g1")
    assert _add(repository, key, 12) == albums.Added(1, schedule=True, duplicate=False)
    assert _add(repository, key, 11).schedule is False
    assert _add(repository, key, 12).duplicate
    claimed = repository.change_album(key, lambda a: albums.claim(a, 1, "one", T0 + 5))
    assert claimed.verdict is Verdict.SEND and claimed.batch is not None
    assert [i.message_id for i in claimed.batch.items] == [11, 12]
    assert repository.change_album(
        key, lambda a: albums.claim(a, 1, "two", T0 + 6)).verdict is Verdict.BUSY
    assert _add(repository, key, 13, T0 + 6) == albums.Added(2, schedule=True, duplicate=False)
    assert repository.change_album(key, lambda a: albums.finish(a, 1, "one")) is True
    assert repository.change_album(
        key, lambda a: albums.claim(a, 1, "two", T0 + 7)).verdict is Verdict.DONE
    stored: Album | None = repository.change_album(key, lambda a: (None, a))
    assert stored is not None and [b.number for b in stored.batches] == [1, 2]
    assert repository.change_album("absent", lambda a: albums.claim(a, 1, "x", T0)
                                   ).verdict is Verdict.UNKNOWN


def test_concurrent_items_all_land_and_one_of_two_claims_wins(repository: Repository):
    key = albums.album_key(7, 8, "g2")
    threads = [threading.Thread(target=_add, args=(repository, key, m)) for m in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored: Album | None = repository.change_album(key, lambda a: (None, a))
    assert stored is not None
    assert [i.message_id for b in stored.batches for i in b.items] == list(range(1, 9))
    verdicts: list[Verdict] = []

    def claim(owner: str) -> None:
        verdicts.append(repository.change_album(
            key, lambda a: albums.claim(a, 1, owner, T0 + 10)).verdict)

    claimers = [threading.Thread(target=claim, args=(o,)) for o in ("a", "b", "c")]
    for thread in claimers:
        thread.start()
    for thread in claimers:
        thread.join()
    assert sorted(v.value for v in verdicts) == ["busy", "busy", "send"]


def test_erasure_deletes_the_albums_on_their_way(repository: Repository):
    key = albums.album_key(7, 8, "g3")
    _add(repository, key, 21)
    other = albums.album_key(7, 9, "g3")
    repository.change_album(other, lambda a: albums.add_item(
        a, other, 7, 9, Item(22, "photo"), T0, 1))
    repository.delete_user(8)
    assert repository.change_album(key, lambda a: (None, a)) is None
    assert repository.change_album(other, lambda a: (None, a)) is not None
