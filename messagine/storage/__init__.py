"""Storage: the repository port and the adapter that the settings select.

Each adapter imports its driver inside its own module, and this module imports an
adapter only when it is chosen, so a deploy on one backend never loads another's driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from messagine.settings import Settings
    from messagine.storage.port import Repository


def open_repository(settings: Settings) -> Repository:
    """Build the repository for ``settings.storage``; no connection is made before first use."""
    if settings.storage == "sqlite":
        from messagine.storage.sqlite import SqliteRepository  # noqa: PLC0415 - lazy driver

        return SqliteRepository(settings.sqlite_path, flood_rule=settings.flood_rule)
    if settings.storage == "mongo" and settings.mongodb_uri is not None:
        from messagine.storage.mongo import MongoRepository  # noqa: PLC0415 - lazy driver

        return MongoRepository(settings.mongodb_uri.reveal(), settings.mongodb_database,
                               message_retention_days=settings.message_retention_days,
                               chat_retention_days=settings.chat_retention_days,
                               flood_rule=settings.flood_rule)
    if settings.storage == "firestore":
        from messagine.storage.firestore import FirestoreRepository  # noqa: PLC0415 - lazy driver

        return FirestoreRepository(
            settings.firestore_project, settings.firestore_database,
            emulator_host=settings.firestore_emulator_host,
            message_retention_days=settings.message_retention_days,
            chat_retention_days=settings.chat_retention_days, flood_rule=settings.flood_rule)
    raise NotImplementedError(f"STORAGE={settings.storage} has no adapter in this build")
