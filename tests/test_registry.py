"""The backend registry: every entry opens from its settings, has a test server that CI
starts, and is documented; the rest of the bot derives its lists from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import BACKENDS, ROOT, bot_env, drop_test_repository, store_of
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.settings import Settings
from messagine.storage import open_repository
from messagine.storage.registry import REGISTRY, backend

TESTS = ROOT / "tests"


def test_names_are_unique_and_unknown_ones_are_named():
    names = [entry.name for entry in REGISTRY]
    assert len(set(names)) == len(names)
    assert "auto" not in names, "auto is the choice among backends, not one of them"
    with pytest.raises(KeyError, match="known: sqlite, mongo, firestore"):
        backend("postgres")


def test_auto_falls_back_to_exactly_one_backend():
    # With nothing configured, exactly one backend accepts: the highest-ranked fallback.
    accepting = [entry.name for entry in REGISTRY if entry.auto_when({})]
    assert accepting == ["sqlite"]
    ranks = [entry.auto_precedence for entry in REGISTRY]
    assert len(set(ranks)) == len(ranks), "auto would have to break a tie"


@pytest.mark.parametrize("name", BACKENDS)
def test_each_backend_opens_from_the_settings_its_test_server_gives(
        name: str, request: pytest.FixtureRequest, fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "opened.sqlite3") | store_of(request, name).env()
    settings = Settings.from_env(env)
    assert settings.storage == name
    repository = open_repository(settings)
    try:
        assert repository.backend == name
        repository.init_schema()
        assert repository.get_user(1) is None
    finally:
        drop_test_repository(request, repository)


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda entry: entry.name)
def test_each_test_plugin_exists_and_ci_starts_its_server(entry):
    plugin = TESTS / Path(*entry.test_plugin.split(".")).with_suffix(".py")
    assert plugin.is_file(), f"{entry.name}: no test plugin {plugin}"
    assert importlib.util.find_spec(entry.test_plugin) is not None
    source = plugin.read_text()
    assert f"def {entry.test_fixture}(" in source
    if entry.required_in_ci is not None:
        # CI sets the flag where it starts the server; with it, a server that cannot
        # start fails the run instead of skipping every test of the backend.
        assert f"export {entry.required_in_ci}=1" in (ROOT / ".ci" / "run").read_text()
        assert entry.required_in_ci in source


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda entry: entry.name)
def test_each_backend_is_documented(entry):
    readme = (ROOT / "README.md").read_text()
    assert f"`{entry.name}`" in readme
    for variable in entry.variables:
        assert variable in readme, f"{entry.name}: {variable} is not in the README"
