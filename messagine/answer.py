"""How a service answers the user who sent the update.

For a button press the first answer replaces the message that carried the button (so
stale buttons do not pile up); every other answer is a new message.
"""

from __future__ import annotations

from messagine.telegram import Keyboard, Telegram, TelegramRejected


class Answer:
    """Answers to one user for one update."""

    def __init__(
        self, telegram: Telegram, chat_id: int, carrying_message_id: int | None = None
    ) -> None:
        self._telegram = telegram
        self.chat_id = chat_id
        self._carrying = carrying_message_id

    @property
    def carrying_message_id(self) -> int | None:
        """The message whose button was pressed, until the first answer replaces it."""
        return self._carrying

    def send(self, text: str, keyboard: Keyboard | None = None) -> None:
        """Answer with ``text``: in place of the pressed button's message, or as a new message."""
        if self._carrying is not None:
            message_id, self._carrying = self._carrying, None
            try:
                self._telegram.edit_text(self.chat_id, message_id, text, keyboard=keyboard)
            except TelegramRejected:
                pass  # too old to edit, or already showing this: fall through to a new message
            else:
                return
        self._telegram.send_text(self.chat_id, text, keyboard)
