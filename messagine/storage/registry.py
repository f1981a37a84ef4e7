"""The storage backends, one descriptor each: the single list everything else derives from.

The settings take their STORAGE choices, the ``auto`` rule and each backend's validation
from here, ``open_repository`` its factories, the privacy policy the store's name, and the
tests their fixtures and CI checks. Nothing here imports a driver or an adapter: a
backend's adapter is imported inside its ``open``, only when that backend is chosen, so a
deploy on one backend never loads another's driver.

Adding a backend is an adapter module, one entry in ``REGISTRY`` (with its options reader
and opener below) and its test server (docs/design.md, "Adding a backend").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from messagine.settings import Settings
    from messagine.storage.port import Repository

_HOST_PORT_RE = re.compile(r"[A-Za-z0-9.-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}")
_Options = TypeVar("_Options")


@dataclass(frozen=True, slots=True)
class Backend:
    """What the rest of the bot knows about one store."""

    name: str
    """The STORAGE value, also ``Repository.backend`` and the tests' parameter id."""
    store_name: str
    """How the privacy policy names who stores the records (it ends the policy's clause)."""
    variables: tuple[str, ...]
    """The environment variables it reads (documented in the README's settings table)."""
    read: Callable[[Mapping[str, str], list[str]], object]
    """Its options from the environment; appends a message per problem to the list."""
    open: Callable[[Settings], Repository]
    """Its repository for the settings; imports the adapter, connects to nothing."""
    auto_when: Callable[[Mapping[str, str]], bool]
    """Whether STORAGE=auto may choose it in this environment."""
    auto_precedence: int
    """Among the backends ``auto_when`` accepts, ``auto`` chooses the highest."""
    test_plugin: str
    """The tests' module (under tests/) that starts its test server and defines
    ``test_fixture``; tests/conftest.py loads it as a pytest plugin."""
    test_fixture: str
    """The pytest fixture giving a test store: ``open(path)``, ``env()``, ``drop(repo)``."""
    required_in_ci: str | None = None
    """The variable .ci/run exports so that a test server that cannot start fails the run
    instead of skipping (None: the backend needs no server)."""


def on_google_cloud(env: Mapping[str, str]) -> bool:
    """Whether Google Cloud runs us: K_SERVICE, which Cloud Run sets (and so 2nd gen functions).

    FUNCTION_TARGET is no evidence: functions-framework sets it on a laptop too.
    """
    return bool(env.get("K_SERVICE", "").strip())


def options(settings: Settings, kind: type[_Options]) -> _Options:
    """``settings.storage_options`` as the backend's own options type."""
    found = settings.storage_options
    if not isinstance(found, kind):
        raise TypeError(f"STORAGE={settings.storage} has options {type(found).__name__}, "
                        f"not {kind.__name__}")
    return found


def pepper(settings: Settings) -> bytes:
    """The erasure pepper of ``settings`` as the adapters take it."""
    secret = settings.erasure_pepper
    if secret is None:
        raise ValueError("settings without an erasure pepper: build them with from_env")
    return secret.reveal().encode()


# -- SQLite ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """SQLITE_PATH: the database file."""

    path: str


def _read_sqlite(env: Mapping[str, str], problems: list[str]) -> SqliteOptions:
    del problems  # every path is accepted; a bad one fails on first use with its reason
    return SqliteOptions(env.get("SQLITE_PATH", "").strip() or "messagine.sqlite3")


def _open_sqlite(settings: Settings) -> Repository:
    from messagine.storage.sqlite import SqliteRepository  # noqa: PLC0415 - lazy driver

    return SqliteRepository(options(settings, SqliteOptions).path,
                            flood_rule=settings.flood_rule, pepper=pepper(settings))


# -- MongoDB -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MongoOptions:
    """MONGODB_URI (a secret: never in a repr) and MONGODB_DATABASE."""

    uri: str = field(repr=False)
    database: str = "messagine"


def _read_mongo(env: Mapping[str, str], problems: list[str]) -> MongoOptions:
    uri = env.get("MONGODB_URI", "").strip()
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        problems.append("STORAGE=mongo needs MONGODB_URI (mongodb:// or mongodb+srv://)")
    return MongoOptions(uri, env.get("MONGODB_DATABASE", "").strip() or "messagine")


def _open_mongo(settings: Settings) -> Repository:
    from messagine.storage.mongo import MongoRepository  # noqa: PLC0415 - lazy driver

    mongo = options(settings, MongoOptions)
    return MongoRepository(mongo.uri, mongo.database,
                           message_retention_days=settings.message_retention_days,
                           chat_retention_days=settings.chat_retention_days,
                           flood_rule=settings.flood_rule, pepper=pepper(settings))


# -- Firestore ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FirestoreOptions:
    """The project (None: discovered on Google Cloud), the database and the emulator."""

    project: str | None
    database: str = "(default)"
    emulator_host: str | None = None


def _read_firestore(env: Mapping[str, str], problems: list[str]) -> FirestoreOptions:
    project = (env.get("FIRESTORE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
               or env.get("GCP_PROJECT") or "").strip() or None
    emulator = env.get("FIRESTORE_EMULATOR_HOST", "").strip() or None
    if emulator is not None and not _HOST_PORT_RE.fullmatch(emulator):
        problems.append(f"FIRESTORE_EMULATOR_HOST must be host:port, not {emulator!r}")
    if project is None and (emulator is not None or not on_google_cloud(env)):
        problems.append(
            "STORAGE=firestore needs a project id: set GOOGLE_CLOUD_PROJECT (or "
            "FIRESTORE_PROJECT); on Cloud Functions it is found on its own"
            + ("; for the emulator any id works, e.g. demo-test" if emulator else ""))
    return FirestoreOptions(project, env.get("FIRESTORE_DATABASE", "").strip() or "(default)",
                            emulator)


def _open_firestore(settings: Settings) -> Repository:
    from messagine.storage.firestore import FirestoreRepository  # noqa: PLC0415 - lazy driver

    firestore = options(settings, FirestoreOptions)
    return FirestoreRepository(
        firestore.project, firestore.database, emulator_host=firestore.emulator_host,
        message_retention_days=settings.message_retention_days,
        chat_retention_days=settings.chat_retention_days, flood_rule=settings.flood_rule,
        pepper=pepper(settings))


# -- the registry ------------------------------------------------------------------------

REGISTRY: tuple[Backend, ...] = (
    Backend("sqlite", "SQLite, on the bot's own server,", ("SQLITE_PATH",),
            _read_sqlite, _open_sqlite, auto_when=lambda env: True, auto_precedence=0,
            test_plugin="support.sqlite_store", test_fixture="sqlite_test_store"),
    Backend("mongo", "MongoDB Atlas", ("MONGODB_URI", "MONGODB_DATABASE"),
            _read_mongo, _open_mongo,
            auto_when=lambda env: bool(env.get("MONGODB_URI", "").strip()), auto_precedence=2,
            test_plugin="support.mongo_server", test_fixture="mongo_test_store",
            required_in_ci="MESSAGINE_REQUIRE_MONGO"),
    Backend("firestore", "Google Cloud Firestore",
            ("GOOGLE_CLOUD_PROJECT", "FIRESTORE_PROJECT", "FIRESTORE_DATABASE",
             "FIRESTORE_EMULATOR_HOST"),
            _read_firestore, _open_firestore,
            auto_when=lambda env: on_google_cloud(env)
            or bool(env.get("FIRESTORE_EMULATOR_HOST", "").strip()), auto_precedence=1,
            test_plugin="support.firestore_emulator", test_fixture="firestore_test_store",
            required_in_ci="MESSAGINE_REQUIRE_FIRESTORE"),
)
"""Every backend, in the order tests run them."""

BY_NAME: Mapping[str, Backend] = {backend.name: backend for backend in REGISTRY}


def backend(name: str) -> Backend:
    """The backend called ``name``; KeyError names the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no storage backend {name!r}; known: {', '.join(BY_NAME)}") from None


def choose_automatically(env: Mapping[str, str]) -> Backend:
    """The backend STORAGE=auto picks in ``env`` (the README's table).

    Of the backends whose ``auto_when`` accepts ``env``, the highest ``auto_precedence``.
    """
    return max((b for b in REGISTRY if b.auto_when(env)), key=lambda b: b.auto_precedence)
