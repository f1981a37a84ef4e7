"""The sandbox in a real browser: two people meet, talk, reply, edit and part.

Headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs) driven by
Selenium against `python -m messagine sandbox`. Screenshots of the key moments are saved
in artifacts/sandbox/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = ROOT / "artifacts" / "sandbox"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="Debian's chromium and chromium-driver are not installed"),
]


@pytest.fixture
def sandbox_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_TOKEN", "MONGODB_URI")}
    process = subprocess.Popen(
        [sys.executable, "-m", "messagine", "sandbox", "--port", str(port), "--no-browser"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT), "FLOOD_LIMIT": "1000"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(150):
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


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


def test_two_people_chat_in_the_browser(sandbox_url: str, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The page re-renders a chat when it changes, so elements go stale: retry until found.
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(sandbox_url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".pane")) == 2)
    alice, bob = browser.find_elements(By.CSS_SELECTOR, ".pane")

    def pane_has(pane, text: str) -> None:
        wait.until(lambda _d: any(text in m.text for m in
                                  pane.find_elements(By.CSS_SELECTOR, ".message")))

    def say(pane, text: str) -> None:
        box = pane.find_element(By.CSS_SELECTOR, ".text")
        box.send_keys(text, Keys.ENTER)

    def press(pane, label: str) -> None:
        def click(_d):
            buttons = [b for b in pane.find_elements(By.CSS_SELECTOR, ".keyboard button")
                       if label in b.text]
            if not buttons:
                return False
            buttons[-1].click()
            return True
        wait.until(click)

    def click_in_message(pane, source: str, text: str, action: str) -> None:
        def click(_d):
            found = [m for m in pane.find_elements(
                By.CSS_SELECTOR, f'.message[data-from="{source}"]') if text in m.text]
            if not found:
                return False
            found[-1].find_element(By.CSS_SELECTOR, action).click()
            return True
        wait.until(click)

    def shot(name: str) -> None:
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    say(alice, "/start")
    pane_has(alice, "Welcome to Messagine")
    press(alice, "Find Chat")
    press(alice, "16 or older")
    pane_has(alice, "Searching for someone")
    bob.find_element(By.CSS_SELECTOR, ".menu-button").click()
    bob.find_element(By.CSS_SELECTOR, '[data-command="find_chat"]').click()
    press(bob, "16 or older")
    pane_has(alice, "Chat started")
    pane_has(bob, "Chat started")
    shot("1-chat-started")

    say(alice, "Hello Bob")
    pane_has(bob, "Hello Bob")
    bob.find_element(By.CSS_SELECTOR, '[data-sample="photo"]').click()
    pane_has(alice, "Photo")
    click_in_message(bob, "bot", "Hello Bob", ".reply-action")
    say(bob, "Hi Alice")
    wait.until(lambda _d: any(
        "Hi Alice" in m.text and m.find_elements(By.CSS_SELECTOR, ".quote")
        for m in alice.find_elements(By.CSS_SELECTOR, ".message")))
    banner = bob.find_element(By.CSS_SELECTOR, ".reply-banner")
    assert not banner.is_displayed(), "the reply target is cleared once sent"
    shot("2-text-photo-reply")

    click_in_message(alice, "me", "Hello Bob", ".edit-action")
    wait.until(expected_conditions.alert_is_present())
    prompt = browser.switch_to.alert
    prompt.send_keys("Hello Bob, edited")
    prompt.accept()
    pane_has(bob, "Hello Bob, edited")
    wait.until(lambda _d: any("edited" in m.text and "Hello Bob, edited" in m.text
                              for m in bob.find_elements(By.CSS_SELECTOR, ".message")))
    shot("3-edited")

    say(alice, "/exit_chat")
    pane_has(alice, "Are you sure")
    press(alice, "Yes")
    pane_has(alice, "You have closed the chat.")
    pane_has(bob, "Chat closed by your partner.")
    shot("4-chat-closed")
    calls = browser.find_element(By.ID, "calls").text
    assert "copyMessage" in calls and "editMessageText" in calls
    assert "outcome=relayed" in browser.find_element(By.ID, "log").text

    browser.set_window_size(390, 844)
    time.sleep(0.3)
    width = browser.execute_script("return document.documentElement.clientWidth")
    pane_width = browser.execute_script(
        "return document.querySelector('.pane').getBoundingClientRect().width")
    assert pane_width <= width, "panes fit a phone-sized window"
    shot("5-phone")
