"""What a deploy uploads: .gcloudignore leaves out everything the function does not run."""

from __future__ import annotations

import shutil
import subprocess

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
