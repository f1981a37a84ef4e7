"""The interface speaks the user's language: nine complete catalogs."""

from __future__ import annotations

from conftest import Deliver
from messagine.dev.fake_bot_api import FakeBotApi


def test_german_and_turkish_users_are_answered_in_their_language(
    deliver: Deliver, fake_api: FakeBotApi
):
    for user_id, code, welcome, help_word, started in (
        (1, "de", "Willkommen bei Messagine", "diese Hilfe", "Der Chat hat begonnen"),
        (3, "tr", "Messagine'e hoş geldin", "bu yardım", "Sohbet başladı"),
        (5, "ru", "Добро пожаловать в Messagine", "эта справка", "Чат начался"),
        (7, "ar", "أهلًا بك في Messagine", "هذه المساعدة", "بدأت المحادثة"),
        (9, "es", "¡Bienvenido a Messagine", "esta ayuda", "¡Empezó el chat"),
        (11, "pt-br", "Bem-vindo ao Messagine", "esta ajuda", "O chat começou"),
        (13, "fr", "Bienvenue sur Messagine", "cette aide", "Le chat a commencé"),
        (15, "id", "Selamat datang di Messagine", "bantuan ini", "Obrolan dimulai"),
    ):
        first = fake_api.user(user_id, "A", language_code=code)
        second = fake_api.user(user_id + 1, "B", language_code=code)
        deliver(first.command("start"))
        assert first.last()["text"].startswith(welcome)
        deliver(first.command("help"))
        assert help_word in first.last()["text"]
        deliver(first.command("find_chat"))
        deliver(second.command("find_chat"))
        assert first.last()["text"].startswith(started)
        assert second.last()["text"].startswith(started)


def test_an_unsupported_language_gets_english(deliver: Deliver, fake_api: FakeBotApi):
    user = fake_api.user(10, "X", language_code="xx")
    deliver(user.command("start"))
    assert user.last()["text"].startswith("Welcome to Messagine")


def test_plural_forms_follow_each_language(deliver: Deliver, fake_api: FakeBotApi):
    from messagine.catalog import Catalog

    russian = Catalog().for_language("ru")
    assert russian.plural("lobby.waiting_count", 2, language="Русский").startswith(
        "Сейчас на языке Русский ждут 2 человека")
    assert "ждут 5 человек" in russian.plural("lobby.waiting_count", 5, language="Русский")
    assert "ждёт 21 человек" in russian.plural("lobby.waiting_count", 21, language="Русский")
    arabic = Catalog().for_language("ar")
    assert "شخصان" in arabic.plural("lobby.waiting_count", 2, language="العربية")
    assert "أشخاص" in arabic.plural("lobby.waiting_count", 3, language="العربية")


def test_the_interface_falls_back_to_the_telegram_language(deliver: Deliver,
                                                          fake_api: FakeBotApi):
    user = fake_api.user(20, "Y", language_code="de")
    deliver(user.command("set_language"))
    deliver(user.press_button("Alle >>"))
    deliver(user.press_button("日本語"))
    assert user.last()["text"] == "Deine Sprache ist jetzt 日本語.", \
        "Japanese has no catalog, so the app's German is used"
    turkish = fake_api.user(21, "Z", language_code="en")
    deliver(turkish.command("set_language"))
    deliver(turkish.press_button("All >>"))
    deliver(turkish.press_button("Türkçe"))
    assert turkish.last()["text"] == "Dilin artık Türkçe."


def test_queue_feedback_counts_only_who_can_be_paired(deliver: Deliver, fake_api: FakeBotApi):
    first, second = fake_api.user(30, "A"), fake_api.user(31, "B")
    deliver(first.command("find_chat"))
    assert "nobody else who can be paired with you is searching in English" in \
        first.last()["text"]
    assert "Also searching" not in first.last()["text"]
    deliver(second.command("find_chat"))
    deliver(first.command("exit_chat"))
    deliver(first.press_button("Yes"))
    # They just met, so both wait: the other one is searching but cannot be paired.
    deliver(first.command("find_chat"))
    deliver(second.command("find_chat"))
    told = second.last()["text"]
    assert "nobody else who can be paired with you is searching in English" in told
    assert "Also searching in English, but not someone you can be paired with now" in told
    assert told.split("\n\n")[2].endswith(": 1.")
    germans = [fake_api.user(40 + i, "G", language_code="de") for i in range(2)]
    for german in germans:
        deliver(german.command("set_language"))
        deliver(german.press_button("Deutsch"))
    deliver(germans[0].command("find_chat"))
    assert "Gerade sucht niemand sonst auf Deutsch" in germans[0].last()["text"]
