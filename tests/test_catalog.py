"""The message catalog: complete, compiled from its source, and used by key everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from messagine.catalog import LOCALE_DIR, Catalog

PACKAGE = Path(__file__).resolve().parent.parent / "messagine"


def po_messages(language: str) -> dict[str, str]:
    """Every message by key; a plural message's forms joined by a newline and "|"."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messagine.po"
    with path.open("rb") as source:
        catalog = read_po(source)
    messages = {}
    for m in catalog:
        if not m.id:
            continue
        key = m.id[0] if isinstance(m.id, tuple) else m.id
        text = "\n|".join(m.string) if isinstance(m.string, tuple) else m.string
        messages[str(key)] = str(text)
    return messages


def keys_used_in_code() -> set[str]:
    """Every string in the package shaped like a catalog key: "prefix.name" with a prefix
    the English catalog uses (so a mistyped key is caught wherever it is written), and the
    literal first argument of every t(...) / partner_t(...) call."""
    prefixes = {key.split(".")[0] for key in po_messages("en") if "." in key}
    keys: set[str] = set()
    # Storage adapters hold database field paths ("chat.id"), never interface text.
    sources = [p for p in PACKAGE.rglob("*.py") if "storage" not in p.parts]
    for path in sources:
        tree = ast.parse(path.read_text())
        # Analytics event names ("chat.ended") share the shape of keys but are not text.
        events = {id(call.args[1]) for call in ast.walk(tree)
                  if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                  and call.func.attr == "track" and len(call.args) > 1}
        # Pieces of f-strings ("btn.report_" in f"btn.report_{reason}") are not keys.
        events |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                   for part in node.values}
        for node in ast.walk(tree):
            if id(node) in events:
                continue
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("t", "partner_t") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                keys.add(str(node.args[0].value))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.fullmatch(r"[a-z]+\.[a-z_]+", node.value)
                    and node.value.split(".")[0] in prefixes):
                keys.add(node.value)
    return keys


def test_the_compiled_catalogs_match_their_sources():
    catalog = Catalog()
    assert "en" in catalog.languages()
    for language in catalog.languages():
        texts = catalog.for_language(language)
        for key, text in po_messages(language).items():
            if "\n|" in text:  # a plural message: the compiled forms include the first one
                assert texts.plural(key, 1, language="L") in text.replace("{language}", "L") \
                    .replace("{count}", "1"), f"{language}/{key}: run pybabel compile"
                continue
            assert texts(key) == text, f"{language}/{key}: run pybabel compile"


def test_every_key_the_code_uses_is_in_english():
    used = keys_used_in_code()
    assert len(used) > 30, "the scan found the keys"
    missing = used - set(po_messages("en"))
    assert not missing


@pytest.mark.parametrize("language", Catalog().languages())
def test_every_catalog_has_every_message_with_the_same_placeholders(language: str):
    english, other = po_messages("en"), po_messages(language)
    assert set(other) == set(english)
    for key, text in english.items():
        assert set(re.findall(r"{(\w+)}", other[key])) == set(re.findall(r"{(\w+)}", text)), key


def test_a_language_without_a_catalog_falls_back_to_english():
    texts = Catalog().for_language("sw")
    assert texts("btn.yes") == "Yes ✅"
    with pytest.raises(KeyError):
        texts("no.such.key")


def test_placeholders_are_filled():
    texts = Catalog().for_language("en")
    assert "Deutsch" in texts("language.set", language="Deutsch")


DEVELOPERS_WORDS = {"en": ("lobby", "update id"), "de": ("lobby", "update-id"),
                    "tr": ("lobi", "güncelleme kimlik"), "ru": ("лобби", "id обновлен"),
                    "es": ("sala de espera", "actualizaciones"),
                    "pt": ("sala de espera", "atualizações"),
                    "fr": ("salle d’attente", "mises à jour"), "id": ("ruang tunggu", "pembaruan"),
                    "ar": ("غرفة الانتظار", "التحديثات")}
"""The developers' words: users are "searching" (not in a lobby), and Telegram's updates
are the numbers it gives their messages and button presses."""


@pytest.mark.parametrize("language", sorted(DEVELOPERS_WORDS))
def test_no_text_speaks_the_developers_words(language: str):
    messages = po_messages(language)
    for word in DEVELOPERS_WORDS[language]:
        found = [key for key, text in messages.items() if word in text.lower()]
        assert found == [], f"{language}: {word!r} is the developers' word"
