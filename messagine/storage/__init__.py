"""Storage: the repository port and the adapter that the settings select.

Each adapter imports its driver inside its own module, and the registry imports an
adapter only when it is chosen, so a deploy on one backend never loads another's driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from messagine.storage.registry import backend

if TYPE_CHECKING:
    from messagine.settings import Settings
    from messagine.storage.port import Repository


def open_repository(settings: Settings) -> Repository:
    """Build the repository for ``settings.storage``; no connection is made before first use."""
    return backend(settings.storage).open(settings)
