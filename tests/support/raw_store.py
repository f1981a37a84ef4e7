"""Everything a test store holds, read from the database itself (no adapter code).

``dump`` lists every table (SQLite's ``sqlite_master``) or collection (MongoDB's
``list_collection_names``, Firestore's ``collections()``) the database has, so a table
or collection added later is in the dump without changing this module; ``values``
flattens a dump into every scalar stored, document ids included.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

Dump = dict[str, list[dict[str, Any]]]


def dump(repository: Any, sqlite_path: str | None = None) -> Dump:
    """Every record of every table or collection, each as a dict (ids under ``_id``)."""
    if repository.backend == "sqlite":
        conn = sqlite3.connect(sqlite_path or repository._database._path)
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            out: Dump = {}
            for table in tables:
                cursor = conn.execute(f"SELECT * FROM {table}")
                names = [c[0] for c in cursor.description]
                out[table] = [_parsed(dict(zip(names, row, strict=True))) for row in cursor]
            return out
        finally:
            conn.close()
    if repository.backend == "firestore":
        return {collection.id: [{"_id": snap.id, **snap.to_dict()}
                                for snap in collection.stream()]
                for collection in repository.client.collections()}
    db = repository.db
    return {name: list(db[name].find()) for name in db.list_collection_names()}


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    """A SQLite row with its JSON columns read: ids inside them count as stored.

    A ``doc`` column holds the whole document (the albums table): its fields are the
    record's, as in the document stores.
    """
    out: dict[str, Any] = {}
    for name, stored in row.items():
        value = stored
        if isinstance(stored, str) and stored[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                value = json.loads(stored)
        if name == "doc" and isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    return out


def values(stored: Dump) -> list[Any]:
    """Every scalar in ``stored``; string ids such as ``"777001:5"`` split into their parts."""
    found: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.append(value)
            found.extend(int(part) for part in value.split(":")
                         if part.lstrip("-").isdigit())
        else:
            found.append(value)

    for records in stored.values():
        walk(records)
    return found
