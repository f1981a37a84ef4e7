"""The message catalog: every text a user sees, looked up by key in gettext catalogs.

Catalogs live in ``messagine/locales/<lang>/LC_MESSAGES/messagine.po`` (edited by people)
and are compiled to ``.mo`` with Babel (``pybabel compile -d messagine/locales -D
messagine``). The msgids are stable keys; English is complete and is the fallback of every
other language, so a missing translation shows English rather than a key.
"""

from __future__ import annotations

import gettext
import threading
from pathlib import Path

from messagine.models import UserState

LOCALE_DIR = Path(__file__).parent / "locales"
DOMAIN = "messagine"
FALLBACK = "en"


class Texts:
    """The catalog of one language: ``texts("key", name=value)`` gives the filled-in text."""

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._translations = translations

    def __call__(self, key: str, /, **values: object) -> str:
        """The text for ``key``, with ``{placeholders}`` filled from ``values``."""
        message = self._translations.gettext(key)
        if message == key:
            raise KeyError(f"message {key!r} is in no catalog")
        return message.format(**values) if values else message

    def plural(self, key: str, count: int, /, **values: object) -> str:
        """The form of ``key`` for ``count`` (the language's plural rule), ``{count}`` filled."""
        message = self._translations.ngettext(key, key + ".plural", count)
        if message in (key, key + ".plural"):
            raise KeyError(f"message {key!r} is in no catalog")
        return message.format(count=count, **values)


class Catalog:
    """All catalogs, loaded once per instance and cached per language."""

    def __init__(self, locale_dir: Path = LOCALE_DIR) -> None:
        self._locale_dir = locale_dir
        self._cache: dict[str, Texts] = {}
        self._lock = threading.Lock()
        self._languages: list[str] | None = None

    def languages(self) -> list[str]:
        """The languages that have a compiled catalog."""
        if self._languages is None:
            compiled = self._locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")
            self._languages = sorted(path.parent.parent.name for path in compiled)
        return self._languages

    def for_user(self, user: UserState) -> Texts:
        """The user's interface language, falling back as far as needed.

        Their chosen language if it has a catalog, else their Telegram app's language if
        that has one, else English.
        """
        available = self.languages()
        if user.language in available:
            return self.for_language(user.language)
        app_language = (user.language_code or "").lower().replace("_", "-").split("-")[0]
        return self.for_language(app_language if app_language in available else FALLBACK)

    def for_language(self, language: str) -> Texts:
        """The texts for ``language``, or English where it has no catalog."""
        with self._lock:
            texts = self._cache.get(language)
            if texts is None:
                texts = Texts(language, self._load(language))
                self._cache[language] = texts
            return texts

    def _load(self, language: str) -> gettext.NullTranslations:
        english = gettext.translation(DOMAIN, self._locale_dir, languages=[FALLBACK])
        if language == FALLBACK:
            return english
        translations = gettext.translation(
            DOMAIN, self._locale_dir, languages=[language], fallback=True
        )
        if isinstance(translations, gettext.GNUTranslations):
            translations.add_fallback(english)
            return translations
        return english
