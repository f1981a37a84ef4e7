"""The sandbox in a real browser: two people meet, talk, reply, edit, share and part.

Headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs) driven by
Selenium against `python -m messagine sandbox` with the default flood rule: a pair, a
burst of short lines, a reply whose quote follows an edit, a held link, a confirmed
location, /mydata's file opened from the page, a third pane, Exit Chat pressed on the old
"Chat started" (the newest line tells the truth), the end-of-chat card and a rating, a
restart of the sandbox and a second chat. Screenshots of the steps go to a pytest tmp
directory (named in the test's output); with MESSAGINE_SCREENSHOTS=docs/screenshots/sandbox
they replace the committed ones that the README shows (a run never changes the tree
unless asked to).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ROOT, free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("MESSAGINE_SCREENSHOTS")
"""Where the conversation's screenshots go instead of a tmp directory (to refresh them)."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="Debian's chromium and chromium-driver are not installed"),
]


class SandboxProcess:
    """``python -m messagine sandbox`` in a directory of its own, which can be restarted."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.url = f"http://127.0.0.1:{free_port()}/"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("TELEGRAM_TOKEN", "MONGODB_URI")}
        port = self.url.rstrip("/").rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "messagine", "sandbox", "--port", port, "--no-browser"],
            cwd=self.where, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(150):
            try:
                requests.get(self.url, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the sandbox did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    running = SandboxProcess(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def test_two_people_chat_in_the_browser(sandbox: SandboxProcess, browser,  # type: ignore[no-untyped-def]
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    screenshots = ROOT / SCREENSHOTS if SCREENSHOTS else tmp_path_factory.mktemp("sandbox")
    screenshots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {screenshots}")  # where to look after a failure
    # The page re-renders a chat when it changes, so elements go stale: retry until found.
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))

    def open_page() -> tuple[Any, Any]:
        browser.get(sandbox.url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".pane")) == 2)
        first, second = browser.find_elements(By.CSS_SELECTOR, ".pane")
        return first, second

    def messages(pane: Any, source: str = "") -> list[Any]:
        selector = ".message" + (f'[data-from="{source}"]' if source else "")
        return list(pane.find_elements(By.CSS_SELECTOR, selector))

    def pane_has(pane: Any, text: str) -> None:
        wait.until(lambda _d: any(text in m.text for m in messages(pane)))

    def say(pane: Any, text: str) -> None:
        box = pane.find_element(By.CSS_SELECTOR, ".text")
        box.send_keys(text, Keys.ENTER)

    def press(pane: Any, label: str) -> None:
        def click(_d: Any) -> bool:
            buttons = [b for b in pane.find_elements(By.CSS_SELECTOR, ".keyboard button")
                       if label in b.text]
            if not buttons:
                return False
            buttons[-1].click()
            return True
        wait.until(click)

    def click_in_message(pane: Any, source: str, text: str, action: str) -> None:
        def click(_d: Any) -> bool:
            found = [m for m in messages(pane, source) if text in m.text]
            if not found:
                return False
            found[-1].find_element(By.CSS_SELECTOR, action).click()
            return True
        wait.until(click)

    def shot(name: str) -> None:
        browser.save_screenshot(str(screenshots / f"{name}.png"))

    def pair(alice: Any, bob: Any) -> None:
        say(alice, "/start")
        pane_has(alice, "Welcome to Messagine")
        press(alice, "Find Chat")
        press(alice, "16 or older")
        pane_has(alice, "Searching for someone")
        bob.find_element(By.CSS_SELECTOR, ".menu-button").click()
        bob.find_element(By.CSS_SELECTOR, '[data-command="find_chat"]').click()
        press(bob, "16 or older")
        for pane in (alice, bob):
            pane_has(pane, "Chat started")
            pane_has(pane, "never share your phone number, address or passwords")

    def click_button_of(pane: Any, text: str, label: str) -> None:
        """Press ``label`` under the newest bot message showing ``text``, however old."""
        def click(_d: Any) -> bool:
            found = [m for m in messages(pane, "bot") if text in m.text]
            buttons = found[-1].find_elements(By.CSS_SELECTOR, ".keyboard button") \
                if found else []
            chosen = [b for b in buttons if label in b.text]
            if not chosen:
                return False
            chosen[-1].click()
            return True
        wait.until(click)

    def newest(pane: Any) -> str:
        return str(messages(pane)[-1].text)

    alice, bob = open_page()
    assert browser.find_element(By.ID, "pair-hint").is_displayed()
    pair(alice, bob)
    shot("1-chat-started")

    # People type in bursts: five short lines at once all arrive, none "too fast".
    burst = ["lol", "wait", "what", "do you", "do?"]
    for line in burst:
        say(bob, line)
    wait.until(lambda _d: [m.text.split("\n")[0] for m in messages(alice, "bot")][-5:] == burst)
    assert not any("did not get through" in m.text for m in messages(bob))
    shot("1b-burst-of-five")

    say(alice, "Hello Bob")
    pane_has(bob, "Hello Bob")
    bob.find_element(By.CSS_SELECTOR, '[data-sample="photo"]').click()
    pane_has(alice, "Photo")
    click_in_message(bob, "bot", "Hello Bob", ".reply-action")
    say(bob, "Hi Alice")
    wait.until(lambda _d: any(
        "Hi Alice" in m.text and m.find_elements(By.CSS_SELECTOR, ".quote")
        for m in messages(alice)))
    banner = bob.find_element(By.CSS_SELECTOR, ".reply-banner")
    assert not banner.is_displayed(), "the reply target is cleared once sent"

    click_in_message(alice, "me", "Hello Bob", ".edit-action")
    wait.until(expected_conditions.alert_is_present())
    prompt = browser.switch_to.alert
    prompt.send_keys("Hello Bob, edited")
    prompt.accept()
    wait.until(lambda _d: any("edited" in m.text and "Hello Bob, edited" in m.text
                              for m in messages(bob)))

    def quote_of(pane: Any, text: str) -> str:
        found = [m for m in messages(pane) if text in m.text
                 and m.find_elements(By.CSS_SELECTOR, ".quote")]
        return str(found[-1].find_element(By.CSS_SELECTOR, ".quote").text) if found else ""

    # Both quotes of the edited message follow the edit: Bob's reply, and its copy at Alice.
    wait.until(lambda _d: quote_of(bob, "Hi Alice") == "Hello Bob, edited")
    wait.until(lambda _d: quote_of(alice, "Hi Alice") == "Hello Bob, edited")
    shot("2-reply-quotes-the-edit")

    copies_at_bob = len(messages(bob, "bot"))
    say(alice, "join https://spam.example now")
    pane_has(alice, "Links and usernames are held back in the first 3 minutes")
    time.sleep(1)  # two refreshes of the page: had the link gone out, it would show now
    assert len(messages(bob, "bot")) == copies_at_bob
    assert not any("spam.example" in m.text for m in messages(bob))
    shot("3-link-held")

    alice.find_element(By.CSS_SELECTOR, '[data-sample="location"]').click()
    pane_has(alice, "This shares an exact location with a stranger. Send it?")
    assert not any("📍" in m.text for m in messages(bob))
    press(alice, "Send")
    pane_has(alice, "Sent to your partner.")
    pane_has(bob, "📍 52.520008, 13.404954")
    shot("4-location-confirmed")

    say(alice, "/mydata")
    wait.until(lambda _d: alice.find_elements(By.CSS_SELECTOR, ".file-link"))
    link = alice.find_elements(By.CSS_SELECTOR, ".file-link")[-1].get_attribute("href")
    opened = requests.get(str(link), timeout=5)
    assert opened.status_code == 200 and opened.headers["Content-Type"] == "application/json"
    assert "profile" in opened.json()

    browser.find_element(By.ID, "add-user").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".pane")) == 3)
    time.sleep(0.8)  # the log and calls panels refresh with long lines
    panes_box = browser.execute_script(
        "return document.getElementById('panes').getBoundingClientRect().width")
    widths = browser.execute_script(
        "return [...document.querySelectorAll('.pane')].map(p => p.getBoundingClientRect())"
        ".map(r => [r.top, r.width])")
    assert len({round(top) for top, _ in widths}) == 1, "three panes side by side"
    assert sum(width for _, width in widths) >= 0.9 * panes_box, "no large gap beside them"
    for panel in ("calls", "log"):
        assert browser.execute_script(
            f"const e = document.getElementById('{panel}').parentElement;"
            "return e.scrollWidth <= e.clientWidth"), f"the {panel} panel scrolls sideways"
    shot("5-three-panes")
    calls = browser.find_element(By.ID, "calls").text
    assert "copyMessage" in calls and "editMessageText" in calls
    assert "outcome=relayed" in browser.find_element(By.ID, "log").text

    # Exit Chat on the old "Chat started", screens up: asked at the bottom, and Yes there
    # leaves the truth on the newest line.
    click_button_of(alice, "Chat started", "Exit Chat")
    wait.until(lambda _d: "Are you sure" in newest(alice))
    shot("5b-exit-asked-at-the-bottom")
    press(alice, "Yes")
    wait.until(lambda _d: newest(alice).startswith("You have closed the chat."))
    assert not [m for m in messages(alice, "bot") if "Chat started" in m.text
                and m.find_elements(By.CSS_SELECTOR, ".keyboard button")], "old buttons retire"
    pane_has(bob, "Chat closed by your partner.")
    wait.until(lambda _d: newest(bob).startswith("Chat closed by your partner."))
    assert "How was it?" in newest(bob)
    shot("5c-end-of-chat-card")
    press(bob, "👎")
    wait.until(lambda _d: "your 👎 is counted" in newest(bob))
    assert "👎" not in [b.text for b in messages(bob)[-1].find_elements(
        By.CSS_SELECTOR, ".keyboard button")], "rated once"
    shot("5d-rated")

    # A restart starts from a fresh store: the same two people can meet again at once.
    sandbox.stop()
    sandbox.start()
    alice, bob = open_page()
    assert messages(alice) == [] and messages(bob) == []
    pair(alice, bob)
    say(bob, "Hello again")
    pane_has(alice, "Hello again")
    shot("6-after-restart")

    # Up to four people: one or two rows of panes, none too narrow, no sideways scroll.
    for count in (3, 4):
        browser.find_element(By.ID, "add-user").click()
        wait.until(lambda d, n=count: len(d.find_elements(By.CSS_SELECTOR, ".pane")) == n)
    time.sleep(0.5)
    boxes = browser.execute_script(
        "return [...document.querySelectorAll('.pane')].map(p => p.getBoundingClientRect())"
        ".map(r => [r.top, r.width])")
    assert len({round(top) for top, _ in boxes}) <= 2, "four panes in one or two rows"
    assert min(width for _, width in boxes) >= 220, "each pane wide enough to read"
    assert browser.execute_script(
        "return [...document.querySelectorAll('.composer')].every(c => {"
        " const send = c.lastElementChild.getBoundingClientRect();"
        " return send.right <= c.getBoundingClientRect().right + 1; })"), "Send stays in its pane"
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    shot("6b-four-panes")

    browser.set_window_size(390, 844)
    time.sleep(0.3)
    width = browser.execute_script("return document.documentElement.clientWidth")
    pane_width = browser.execute_script(
        "return document.querySelector('.pane').getBoundingClientRect().width")
    assert pane_width <= width, "panes fit a phone-sized window"
    shot("7-phone")


def test_an_album_and_a_reaction_in_the_browser(  # type: ignore[no-untyped-def]
        sandbox: SandboxProcess, browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Alice sends an album: Bob sees it as one album, reacts, and Alice sees his reaction."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    screenshots = tmp_path_factory.mktemp("sandbox-album-screenshots")
    print(f"screenshots: {screenshots}")  # where to look after a failure
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(sandbox.url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".pane")) == 2)
    alice, bob = browser.find_elements(By.CSS_SELECTOR, ".pane")

    def texts(pane: Any) -> str:
        return "\n".join(m.text for m in pane.find_elements(By.CSS_SELECTOR, ".message"))

    def press(pane: Any, label: str) -> None:
        def click(_d: Any) -> bool:
            buttons = [b for b in pane.find_elements(By.CSS_SELECTOR, ".keyboard button")
                       if label in b.text]
            if buttons:
                buttons[-1].click()
            return bool(buttons)
        wait.until(click)

    for pane in (alice, bob):
        pane.find_element(By.CSS_SELECTOR, ".text").send_keys("/find_chat", Keys.ENTER)
        press(pane, "16 or older")
    wait.until(lambda _d: all("Chat started" in texts(p) for p in (alice, bob)))

    alice.find_element(By.CSS_SELECTOR, '[data-sample="album"]').click()

    def album_of(pane: Any, source: str) -> list[Any]:
        groups = pane.find_elements(By.CSS_SELECTOR, ".album")
        items = groups[-1].find_elements(By.CSS_SELECTOR, f'.message[data-from="{source}"]') \
            if groups else []
        return items if len(items) == 3 else []

    received = wait.until(lambda _d: album_of(bob, "bot"))
    assert "An album" in received[0].text, "the caption is kept on the first item"
    assert len(album_of(alice, "me")) == 3, "the sender's own album is grouped too"
    browser.save_screenshot(str(screenshots / "1-album.png"))

    # Bob reacts to the second photo of the album; it appears on Alice's second photo.
    def react(_d: Any) -> bool:
        items = album_of(bob, "bot")
        if not items:
            return False
        items[1].find_element(By.CSS_SELECTOR, ".react-action").click()
        items[1].find_element(By.CSS_SELECTOR, '.reaction-picker [data-emoji="👍"]').click()
        return True

    wait.until(react)
    wait.until(lambda _d: (items := album_of(alice, "me")) and items[1].find_elements(
        By.CSS_SELECTOR, '.reaction.partner[data-reaction="👍"]'))
    assert not album_of(alice, "me")[0].find_elements(By.CSS_SELECTOR, ".reaction")
    wait.until(lambda _d: (items := album_of(bob, "bot")) and items[1].find_elements(
        By.CSS_SELECTOR, '.reaction.mine[data-reaction="👍"]'))
    browser.save_screenshot(str(screenshots / "2-reaction.png"))
