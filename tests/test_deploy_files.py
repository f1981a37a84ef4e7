"""What a deploy uploads: .gcloudignore leaves out everything the function does not run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
def test_only_runtime_files_are_uploaded():
    listed = subprocess.run(["gcloud", "meta", "list-files-for-upload"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True)
    files = set(listed.stdout.split())
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split())
    expected = {f for f in tracked
                if (f in ("main.py", "requirements.txt") or f.startswith("messagine/"))
                and not f.startswith(("messagine/dev/", "messagine/ops/"))
                and not f.endswith(".po")}
    assert files == expected


def _tracked() -> set[str]:
    return set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.split())


def test_the_top_level_is_the_agreed_one():
    allowed = {"main.py", "messagine", "tests", "cloudbuild.yaml", "requirements.txt",
               ".gcloudignore", "README.md", "pyproject.toml", ".ci", "docs", "benchmarks",
               ".gitignore", ".gitattributes"}
    assert {name.split("/", 1)[0] for name in _tracked()} <= allowed


def test_the_committed_screenshots_are_the_browser_tests_steps():
    """The README shows docs/screenshots/sandbox/: each file is a step the test still takes."""
    taken = set(re.findall(r'shot\("([^"]+)"\)',
                           (ROOT / "tests" / "test_sandbox_browser.py").read_text()))
    committed = {Path(name).stem for name in _tracked()
                 if name.startswith("docs/screenshots/sandbox/")}
    assert taken and committed == taken
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"\]\((docs/screenshots/sandbox/[^)]*)\)", readme)
    assert shown and all((ROOT / path).exists() for path in shown)
