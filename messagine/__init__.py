"""Messagine: anonymous one-to-one chats between strangers on Telegram.

The package is organised by job: ``settings`` reads the environment, ``runtime`` is the
composition root, ``webhook`` and ``pipeline`` carry an update from HTTP to the
pyTelegramBotAPI handlers in ``handlers``, the services ``conversation`` and ``relay``
hold the rules, and ``storage`` holds the repository port and its adapters.
"""

__version__ = "0.1.0"
