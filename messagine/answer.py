"""How a service answers the user who sent the update.

An answer appears where the user is looking. A button on the newest message of the chat
with the bot is answered in place (its message is replaced, so stale buttons do not pile
up); a button further up is answered with a new message at the bottom, and the message it
sat on loses its buttons, which no longer apply. Every other answer is a new message.
"""

from __future__ import annotations

import contextlib

from messagine.telegram import Keyboard, Telegram, TelegramError, TelegramRejected


class Answer:
    """Answers to one user for one update."""

    def __init__(
        self, telegram: Telegram, chat_id: int, carrying_message_id: int | None = None, *,
        newest: bool = True,
    ) -> None:
        self._telegram = telegram
        self.chat_id = chat_id
        self._carrying = carrying_message_id
        self.newest = newest
        """Whether the pressed button's message is the newest in the chat."""

    @property
    def carrying_message_id(self) -> int | None:
        """The message whose button was pressed, until the first answer replaces it."""
        return self._carrying

    def send(self, text: str, keyboard: Keyboard | None = None) -> None:
        """Answer with ``text``: in place of the pressed newest message, or as a new one."""
        if self._carrying is not None:
            message_id, self._carrying = self._carrying, None
            if not self.newest:
                # Old buttons retire; a message that cannot be edited any more keeps them.
                with contextlib.suppress(TelegramError):
                    self._telegram.edit_keyboard(self.chat_id, message_id, None)
            else:
                try:
                    self._telegram.edit_text(self.chat_id, message_id, text,
                                             keyboard=keyboard)
                except TelegramRejected:
                    pass  # too old to edit, or already showing this: a new message
                else:
                    return
        self._telegram.send_text(self.chat_id, text, keyboard)
