"""The languages users can choose as their matching pool, with native names.

Data, not interface text: the 56 ISO 639-1 codes the earlier bot offered, and the ten
most used ones that the language picker shows first.
"""

from __future__ import annotations

LANGUAGES: dict[str, str] = {
    "en": "English", "zh": "中文", "es": "Español", "ar": "العربية",
    "id": "Bahasa Indonesia", "pt": "Português", "fr": "Français", "ja": "日本語",
    "ru": "Русский", "de": "Deutsch", "tr": "Türkçe", "it": "Italiano", "ko": "한국어",
    "hi": "हिन्दी", "bn": "বাংলা", "ur": "اردو", "fa": "فارسی", "pl": "Polski",
    "uk": "Українська", "nl": "Nederlands", "vi": "Tiếng Việt", "th": "ไทย",
    "ms": "Bahasa Melayu", "tl": "Tagalog", "sv": "Svenska", "no": "Norsk", "da": "Dansk",
    "fi": "Suomi", "el": "Ελληνικά", "he": "עברית", "cs": "Čeština", "sk": "Slovenčina",
    "hu": "Magyar", "ro": "Română", "bg": "Български", "sr": "Српски", "hr": "Hrvatski",
    "sl": "Slovenščina", "lt": "Lietuvių", "lv": "Latviešu", "et": "Eesti", "ka": "ქართული",
    "hy": "Հայերեն", "az": "Azərbaycan", "kk": "Қазақ", "uz": "O\u02bbzbek", "ta": "தமிழ்",
    "te": "తెలుగు", "mr": "मराठी", "gu": "ગુજરાતી", "pa": "ਪੰਜਾਬੀ", "sw": "Kiswahili",
    "am": "አማርኛ", "ha": "Hausa", "yo": "Yorùbá", "ca": "Català",
}

TOP_LANGUAGES: tuple[str, ...] = ("en", "zh", "es", "ar", "id", "pt", "fr", "ja", "ru", "de")

DEFAULT_LANGUAGE = "en"


def language_for(language_code: str | None) -> str:
    """The pool for Telegram's ``language_code`` ("pt-br" -> "pt"); English when unsupported."""
    if not language_code:
        return DEFAULT_LANGUAGE
    base = language_code.lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else DEFAULT_LANGUAGE


def language_name(code: str) -> str:
    """The native name of a supported language code."""
    return LANGUAGES.get(code, code)
