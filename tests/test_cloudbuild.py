"""The build file: its deploy step is valid for the real gcloud CLI and gives production
every setting it needs. No account is needed: gcloud must fail only for lack of one."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from messagine.domain.albums import FLUSH_ATTEMPTS, RETRIES
from messagine.domain.claims import REQUEST_TIMEOUT_S
from messagine.settings import Settings

BUILD = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def step(step_id: str) -> dict[str, Any]:
    return next(s for s in BUILD["steps"] if s["id"] == step_id)


ANALYTICS = (",MIXPANEL_TOKEN=MIXPANEL_TOKEN:latest,"
             "ANALYTICS_PSEUDONYM_KEY=ANALYTICS_PSEUDONYM_KEY:latest")


def filled(text: str, **overrides: str) -> str:
    """The text with the build's default substitutions (and a project id) filled in."""
    values = {**BUILD["substitutions"], "PROJECT_ID": "demo-project", **overrides}
    return re.sub(r"\$\{?(_?[A-Z_]+)\}?", lambda m: str(values.get(m.group(1), m.group(0))),
                  text)


def deploy_args(step_id: str = "deploy", **overrides: str) -> list[str]:
    return [filled(arg, **overrides) for arg in step(step_id)["args"]]


def flag(name: str, step_id: str = "deploy") -> str:
    return next(a.split("=", 1)[1] for a in deploy_args(step_id)
                if a.startswith(f"--{name}="))


@pytest.mark.parametrize("step_id", ["deploy", "deploy-reminders"])
def test_the_entry_point_exists_in_main(step_id: str):
    functions = {node.name for node in ast.parse((ROOT / "main.py").read_text()).body
                 if isinstance(node, ast.FunctionDef)}
    assert flag("entry-point", step_id) in functions


def test_the_reminders_job_is_private_and_has_its_secret():
    args = deploy_args("deploy-reminders")
    assert "--no-allow-unauthenticated" in args and "--allow-unauthenticated" not in args
    secrets = {pair.split("=")[0] for pair in flag("set-secrets", "deploy-reminders").split(",")}
    assert {"TELEGRAM_TOKEN", "JOB_SECRET", "MONGODB_URI"} <= secrets


def test_the_timeout_is_below_telegrams_wait_and_the_one_claims_are_leased_for():
    assert int(flag("timeout").rstrip("s")) < 60
    # The claim lease and the 429 budget follow REQUEST_TIMEOUT_SECONDS (default: this).
    assert flag("timeout") == f"{int(REQUEST_TIMEOUT_S)}s"


def test_concurrency_above_one_has_a_whole_cpu():
    assert int(flag("concurrency")) > 1 and float(flag("cpu")) >= 1


def test_every_setting_production_requires_is_provided():
    provided = {pair.split("=")[0] for pair in flag("set-env-vars").split(",")}
    provided |= {pair.split("=")[0] for pair in flag("set-secrets").split(",")}
    assert {"TELEGRAM_TOKEN", "WEBHOOK_SECRET", "STORAGE"} <= provided
    if BUILD["substitutions"]["_STORAGE"] == "mongo":
        assert "MONGODB_URI" in provided
    # Secrets come from Secret Manager, never as plain environment values.
    assert not {"TELEGRAM_TOKEN", "WEBHOOK_SECRET", "MONGODB_URI"} & {
        pair.split("=")[0] for pair in flag("set-env-vars").split(",")}
    assert "GOOGLE_CLOUD_PROJECT=demo-project" in flag("set-env-vars").split(",")
    with_analytics = next(a for a in deploy_args(_ANALYTICS_SECRETS=ANALYTICS)
                          if a.startswith("--set-secrets="))
    assert {"MIXPANEL_TOKEN", "ANALYTICS_PSEUDONYM_KEY"} <= {
        pair.split("=")[0] for pair in with_analytics.removeprefix("--set-secrets=").split(",")}


def test_the_webhook_step_gets_the_secrets_it_uses():
    register = step("register-webhook")
    assert set(register["secretEnv"]) == {"TELEGRAM_TOKEN", "WEBHOOK_SECRET"}
    script = register["args"][-1]
    assert "set-webhook --url" in script and "set-commands" in script


FIRESTORE = {"_STORAGE": "firestore", "_STORAGE_SECRETS": ""}


def test_on_firestore_no_mongodb_secret_is_asked_for_and_the_indexes_are_set_up():
    for step_id in ("deploy", "deploy-reminders"):
        args = deploy_args(step_id, **FIRESTORE)
        env_vars = next(a for a in args if a.startswith("--set-env-vars="))
        secrets = next(a for a in args if a.startswith("--set-secrets="))
        assert "STORAGE=firestore" in env_vars.split("=", 1)[1].split(",")
        assert "MONGODB_URI" not in secrets
    script = step("firestore-setup")["args"][-1]
    assert '[ "${_STORAGE}" = firestore ]' in script
    assert "python3 -m messagine.storage.setup_firestore --project=$PROJECT_ID" in script
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids.index("firestore-setup") < ids.index("deploy"), "indexes build before traffic"


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
@pytest.mark.parametrize(("step_id", "analytics", "storage"), [
    ("deploy", "", "mongo"), ("deploy", ANALYTICS, "mongo"), ("deploy-reminders", "", "mongo"),
    ("deploy", "", "firestore"), ("cpu-boost", "", "mongo")])
def test_gcloud_accepts_the_deploy_command_and_fails_only_for_lack_of_an_account(
    tmp_path: Path, step_id: str, analytics: str, storage: str
):
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    extra = FIRESTORE if storage == "firestore" else {}
    args = deploy_args(step_id, _ANALYTICS_SECRETS=analytics, **extra)
    result = subprocess.run(["gcloud", *args, "--project=demo-project"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "You do not currently have an active account selected" in result.stderr, \
        result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert "argument --" not in result.stderr


# -- the Cloud Console side: messagine/ops/apply.sh ------------------------------------------------

CREDENTIALS = "You do not currently have an active account selected"

# A stand-in for gcloud on the script's PATH: every call goes to the real gcloud (which
# parses the whole command line and the files it names, then stops for lack of an
# account); the stand-in records how that went and answers as a project in which
# everything exists already (EXISTING=1) or nothing does yet (EXISTING=0).
SHIM = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
real = subprocess.run([{gcloud!r}, *args], capture_output=True, text=True, check=False)
with open(os.environ["SHIM_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "code": real.returncode, "stderr": real.stderr}}) + "\\n")
existing = os.environ["EXISTING"] == "1"
words = [a for a in args if not a.startswith("-")]
if "list" in words:
    print("projects/demo-project/things/1" if existing else "")
elif words[:2] == ["functions", "describe"]:
    print("https://messagine-reminders-xyz.a.run.app")
elif "describe" in words or words[:3] == ["logging", "metrics", "update"]:
    sys.exit(0 if existing else 1)
"""


def apply_console(tmp_path: Path, existing: bool, channel: str = "") -> list[dict[str, Any]]:
    """Run messagine/ops/apply.sh as the build's console step does, through the real gcloud."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "gcloud"
    shim.write_text(SHIM.format(python=sys.executable, gcloud=shutil.which("gcloud")))
    shim.chmod(0o755)
    log = tmp_path / f"calls-{int(existing)}.jsonl"
    console = step("console")
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SHIM_LOG": str(log), "EXISTING": "1" if existing else "0",
           "JOB_SECRET": "job-secret-value",
           **dict(filled(pair, _ALERT_CHANNEL=channel).split("=", 1) for pair in console["env"])}
    result = subprocess.run(["bash", *console["args"]], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_console_step_runs_the_script_with_its_settings():
    console = step("console")
    assert console["args"] == ["messagine/ops/apply.sh"] and console["secretEnv"] == ["JOB_SECRET"]
    env = dict(filled(pair).split("=", 1) for pair in console["env"])
    assert env == {"PROJECT": "demo-project", "REGION": "europe-west1", "FUNCTION": "messagine",
                   "ALERT_CHANNEL": "", "SCHEDULE": "*/10 * * * *"}
    secrets = BUILD["availableSecrets"]["secretManager"]
    assert "JOB_SECRET" in {secret["env"] for secret in secrets}
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids.index("deploy-reminders") < ids.index("console"), "the job needs its function"
    assert ids.index("deploy") < ids.index("cpu-boost")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
@pytest.mark.parametrize("existing", [False, True], ids=["first-build", "next-build"])
def test_gcloud_accepts_every_console_command_and_fails_only_for_lack_of_an_account(
    tmp_path: Path, existing: bool
):
    channel = "projects/demo-project/notificationChannels/123" if existing else ""
    calls = apply_console(tmp_path, existing, channel)
    for call in calls:
        assert call["code"] != 0 and CREDENTIALS in call["stderr"], (call["args"], call["stderr"])
        assert "unrecognized arguments" not in call["stderr"]
    words = [[a for a in call["args"] if not a.startswith("-")] for call in calls]
    ran = {" ".join(w) for w in words}
    verb = "update" if existing else "create"
    metrics = sorted(p.stem for p in (ROOT / "messagine" / "ops" / "metrics").glob("*.json"))
    assert sorted(w[3] for w in words if w[:3] == ["logging", "metrics", verb]) == [
        f"messagine/{name}" for name in metrics], "every metric, named after the function"
    assert sum(w[:4] == ["alpha", "monitoring", "policies", verb] for w in words) == \
        len(list((ROOT / "messagine" / "ops" / "alerts").glob("*.json")))
    assert any(r.startswith(f"monitoring dashboards {verb}") for r in ran)
    assert any(r.startswith(f"scheduler jobs {verb} http messagine-reminders") for r in ran)
    assert any(r.startswith("functions add-invoker-policy-binding messagine-reminders")
               for r in ran)
    assert any(r.startswith("iam service-accounts create") for r in ran) != existing
    job = next(c["args"] for c, w in zip(calls, words, strict=True)
               if w[:3] == ["scheduler", "jobs", verb])
    assert "--oidc-service-account-email=messagine-scheduler@demo-project.iam.gserviceaccount.com" \
        in job
    assert ("--update-headers" if existing else "--headers") + "=X-Job-Secret=job-secret-value" \
        in job
    assert "--schedule=*/10 * * * *" in job and "--http-method=POST" in job


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
def test_the_build_gets_the_whole_repository_and_the_docs_say_how(tmp_path: Path):
    # gcloud builds submit follows .gcloudignore, which keeps only the function's files; the
    # build needs tests/ and messagine/ops/ too, so the documented command names
    # messagine/ops/build.gcloudignore.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    build_ignore = ROOT / "messagine" / "ops" / "build.gcloudignore"
    (tmp_path / ".gcloudignore").write_text(build_ignore.read_text())
    (tmp_path / "messagine" / "stale.pyc").write_bytes(b"")
    listed = subprocess.run(["gcloud", "meta", "list-files-for-upload", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=True)
    uploaded = set(listed.stdout.split())
    assert {"messagine/ops/apply.sh", "tests/requirements.txt", "cloudbuild.yaml",
            "main.py"} <= uploaded
    assert "messagine/stale.pyc" not in uploaded
    # The browser test's screenshots are kept for people, not for the build.
    needed = {name for name in tracked if not name.startswith("docs/screenshots/")}
    assert needed - {".gitignore", ".gcloudignore"} <= uploaded
    assert not {name for name in uploaded if name.startswith("docs/screenshots/")}
    for doc in ("docs/deploy.md", "README.md"):
        submits = re.findall(r"gcloud builds submit[^\n]*", (ROOT / doc).read_text())
        assert submits, doc
        assert all("--ignore-file=messagine/ops/build.gcloudignore" in s for s in submits), doc


# -- the albums' Cloud Tasks queue ---------------------------------------------------------------

def test_the_album_queue_exists_before_the_webhook_and_the_function_is_told_of_it():
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids.index("album-queue") < ids.index("deploy")
    env = dict(pair.split("=", 1) for pair in flag("set-env-vars").split(","))
    settings = Settings.from_env({**env, "TELEGRAM_TOKEN": "424242:AAH-some_token_value_01234",
                                  "MONGODB_URI": "mongodb://127.0.0.1:9/"})
    assert settings.album_queue == "projects/demo-project/locations/europe-west1/queues/albums"
    assert settings.album_flush_url == \
        "https://europe-west1-demo-project.cloudfunctions.net/messagine"


def album_queue_commands() -> list[list[str]]:
    """The album-queue step's gcloud commands, substitutions and its shell variable filled."""
    script = filled(step("album-queue")["args"][-1], PROJECT_NUMBER="123456789")
    retry = re.search(r'retry="([^"]+)"', script)
    assert retry is not None
    # The queue retries as the timer does, and its last attempt is the one the flush knows
    # to be last (it tells the sender); test_album_flush shows that it outlasts a lease.
    assert retry.group(1) == RETRIES.queue_flags()
    assert f"--max-attempts={FLUSH_ATTEMPTS} " in retry.group(1)
    script = script.replace("$$retry", retry.group(1)).replace("\\\n", " ")
    commands = []
    for line in script.splitlines():
        for part in line.split("||"):
            words = part.split()
            if words[:1] == ["gcloud"]:
                commands.append(words[1:])
    return commands


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
def test_gcloud_accepts_every_album_queue_command(tmp_path: Path):
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    commands = album_queue_commands()
    assert [c[:3] for c in commands] == [
        ["services", "enable", "cloudtasks.googleapis.com"], ["tasks", "queues", "create"],
        ["tasks", "queues", "update"], ["tasks", "queues", "add-iam-policy-binding"]]
    for command in commands:
        result = subprocess.run(["gcloud", *command], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode != 0
        assert CREDENTIALS in result.stderr, (command, result.stderr)
