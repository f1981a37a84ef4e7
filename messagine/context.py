"""The context of the update being processed, shared by the pipeline and the handlers.

pyTelegramBotAPI calls a handler with the message alone; the sender's state, which the
pipeline loaded when it claimed the update, reaches the handler through this context
variable (one per thread, since an instance serves requests on several threads).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from messagine.envelope import Envelope
from messagine.models import UserState


@dataclass(slots=True)
class UpdateContext:
    """One update in flight: its id, the sender's state and what became of it."""

    update_id: int
    user: UserState | None
    outcome: str = "unhandled"
    envelope: Envelope | None = None
    """The message read from the raw update (for messages and edits)."""
    raw: Mapping[str, Any] | None = None
    """The update's item as Telegram sent it (``update[kind]``), already checked."""

    def require_envelope(self) -> Envelope:
        """The message's envelope; the message handlers run only for messages."""
        if self.envelope is None:
            raise LookupError("this update has no message")
        return self.envelope

    def require_user(self) -> UserState:
        """The sender's state; handlers run only for updates that have a sender."""
        if self.user is None:
            raise LookupError("this update has no user")
        return self.user


_current: contextvars.ContextVar[UpdateContext] = contextvars.ContextVar("messagine_update")


def current() -> UpdateContext:
    """The update being processed in this thread."""
    return _current.get()


def enter(context: UpdateContext) -> contextvars.Token[UpdateContext]:
    """Make ``context`` the current update; pass the token to ``leave`` afterwards."""
    return _current.set(context)


def leave(token: contextvars.Token[UpdateContext]) -> None:
    """Restore the previous context."""
    _current.reset(token)
