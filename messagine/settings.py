"""Configuration: the one place the environment is read.

``Settings.from_env`` validates everything at once and raises ``SettingsError`` listing
every missing or malformed value, so an operator fixes a deploy in one round. Secrets are
wrapped in ``Secret`` so that no repr, log line or traceback shows them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from messagine.domain.claims import MAX_REQUEST_TIMEOUT_S, REQUEST_TIMEOUT_S
from messagine.domain.flood import FloodRule
from messagine.domain.ratings import RatingRule
from messagine.models import Periods, ReminderRules
from messagine.storage.registry import BY_NAME, choose_automatically, on_google_cloud

DEFAULT_API_URL = "https://api.telegram.org"
STORAGE_CHOICES = ("auto", *BY_NAME)
_TOKEN_RE = re.compile(r"^\d{5,16}:[A-Za-z0-9_-]{20,64}$")
# Telegram accepts 1-256 characters A-Z, a-z, 0-9, _ and - as a webhook secret token.
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class SettingsError(Exception):
    """One or more settings are missing or malformed; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string that never shows itself in repr or str."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self.value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret(***)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the bot; build it with ``from_env``."""

    telegram_token: Secret
    webhook_secret: Secret | None
    telegram_api_url: str
    storage: str
    storage_options: object
    """The chosen backend's own options (``registry.options`` gives them typed)."""
    message_retention_days: int
    chat_retention_days: int
    privacy_contact: str
    privacy_policy_url: str | None
    min_age: int
    flood_rule: FloodRule
    admin_chat_id: int | None
    report_window_s: float
    rating_flag_after: int
    job_secret: Secret | None
    reminder_rules: ReminderRules
    admin_ids: frozenset[int]
    recent_partners: int
    telegram_timeout_s: float
    log_level: str
    structured_logs: bool
    project_id: str | None
    mixpanel_token: Secret | None
    analytics_key: Secret | None
    mixpanel_events_url: str | None
    mixpanel_people_url: str | None
    mixpanel_gdpr_token: Secret | None = None
    """Mixpanel's OAuth token for its GDPR data-deletion API: /deleteme then asks Mixpanel
    to delete the user's events too (without it, only their profile is deleted)."""
    mixpanel_deletion_url: str | None = None
    hold_links_minutes: int = 3
    """Links and usernames are held back this long after a chat starts (0: never)."""
    request_timeout_s: float = REQUEST_TIMEOUT_S
    """The function's request timeout: an update's claim lease and its 429 budget follow."""
    periods: Periods = field(default_factory=Periods)
    """How long the records without a period of their own above are kept."""
    erasure_pepper: Secret | None = None
    """The secret that keys the hash standing for an erased user in the blocks and reports
    kept for others' safety (``messagine.domain.erasure.protection_key``)."""
    album_queue: str | None = None
    """The Cloud Tasks queue that flushes albums (``projects/P/locations/L/queues/Q``);
    None: an in-process timer flushes them (a process that lives on, not a function)."""
    album_flush_url: str | None = None
    """The function's own URL, which the album tasks call."""
    cloud_tasks_endpoint: str | None = None
    """Another Cloud Tasks endpoint (a test's fake), reached over plain REST."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, require_webhook_secret: bool = False
    ) -> Settings:
        """Read and validate the environment (``os.environ`` by default).

        ``require_webhook_secret`` is set by the webhook entry point: a webhook without a
        secret would let anyone on the internet post forged updates.
        """
        env = os.environ if env is None else env
        problems: list[str] = []

        token_text = env.get("TELEGRAM_TOKEN", "").strip()
        if not token_text:
            problems.append("TELEGRAM_TOKEN is not set (the bot token from @BotFather)")
        elif not _TOKEN_RE.match(token_text):
            problems.append("TELEGRAM_TOKEN does not look like a bot token (digits:characters)")

        secret_text = env.get("WEBHOOK_SECRET", "").strip()
        if secret_text and not _SECRET_RE.match(secret_text):
            problems.append("WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ -")
        elif not secret_text and require_webhook_secret:
            problems.append(
                "WEBHOOK_SECRET is not set: the webhook refuses to run without it "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )

        api_url = env.get("TELEGRAM_API_URL", DEFAULT_API_URL).strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", api_url):
            problems.append(f"TELEGRAM_API_URL is not an http(s) URL: {api_url!r}")

        storage, storage_options = _storage(env, problems)

        admin_ids = _ids(env, "ADMIN_IDS", problems)

        recent = _int(env, "RECENT_PARTNERS", 5, 0, 1000, problems)
        hold_links = _int(env, "HOLD_LINKS_MINUTES", 3, 0, 1440, problems)
        timeout = _int(env, "TELEGRAM_TIMEOUT_SECONDS", 10, 1, 50, problems)
        request_timeout = _int(env, "REQUEST_TIMEOUT_SECONDS", int(REQUEST_TIMEOUT_S), 5,
                               int(MAX_REQUEST_TIMEOUT_S), problems)
        if timeout >= request_timeout:
            problems.append(f"TELEGRAM_TIMEOUT_SECONDS ({timeout}) must be below "
                            f"REQUEST_TIMEOUT_SECONDS ({request_timeout})")
        retention = _int(env, "MESSAGE_LOG_RETENTION_DAYS", 30, 1, 3650, problems)
        chat_retention = _int(env, "CHAT_HISTORY_RETENTION_DAYS", 180, 1, 3650, problems)
        min_age = _min_age(env, problems)
        flood_limit = _int(env, "FLOOD_LIMIT", FloodRule().limit, 1, 10_000, problems)
        admin_chat = _one_id(env, "ADMIN_CHAT_ID", problems)
        report_window, rating_flag_after = (
            _int(env, "REPORT_WINDOW_MINUTES", 60, 1, 10_080, problems),
            _int(env, "RATING_FLAG_AFTER", RatingRule().flag_after, 1, 10_000, problems))
        job_secret = env.get("JOB_SECRET", "").strip()
        reminder_rules = ReminderRules(
            remind_after_s=_int(env, "REMINDER_AFTER_HOURS", 24, 1, 24 * 90, problems) * 3600.0,
            lobby_timeout_s=_int(env, "LOBBY_TIMEOUT_HOURS", 12, 1, 24 * 30, problems) * 3600.0,
            run_budget_s=float(_int(env, "REMINDER_RUN_SECONDS", 240, 5, 3000, problems)),
            any_language_after_s=60.0 * _int(env, "ANY_LANGUAGE_AFTER_MINUTES", 15, 1, 10_080,
                                             problems))
        flood_refill = _int(env, "FLOOD_REFILL_SECONDS", int(FloodRule().refill_s), 1, 3600,
                            problems)
        policy_url = _https_url(env, "PRIVACY_POLICY_URL", problems)
        periods = Periods(
            age_refusal_days=_int(env, "AGE_REFUSAL_DAYS", 30, 1, 3650, problems),
            idle_chat_hours=_int(env, "IDLE_CHAT_HOURS", 72, 1, 24 * 365, problems),
            report_days=_int(env, "REPORT_RETENTION_DAYS", 365, 1, 3650, problems),
            exclusion_days=_int(env, "EXCLUSION_RETENTION_DAYS", 365, 1, 3650, problems),
            inactive_days=_int(env, "INACTIVE_ACCOUNT_DAYS", 365, 2, 3650, problems),
            notice_days=_int(env, "INACTIVE_NOTICE_DAYS", 14, 1, 3649, problems))
        if periods.notice_days >= periods.inactive_days:
            problems.append("INACTIVE_NOTICE_DAYS must be less than INACTIVE_ACCOUNT_DAYS")

        log_level = env.get("LOG_LEVEL", "INFO").strip().upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")

        mixpanel_token, analytics_key, mixpanel_urls = _analytics(env, problems)
        pepper = _erasure_pepper(env, token_text, problems)

        log_format = env.get("LOG_FORMAT", "auto").strip().lower() or "auto"
        if log_format not in ("auto", "json", "text"):
            problems.append(f"LOG_FORMAT must be auto, json or text, not {log_format!r}")

        album_queue, album_url, tasks_endpoint = _album_tasks(env, problems)
        if require_webhook_secret and on_google_cloud(env) and album_queue is None:
            # A timer would run after the response, which the platform does not allow.
            problems.append("ALBUM_QUEUE is not set: on Google Cloud albums are sent by a "
                            "Cloud Task (cloudbuild.yaml creates the queue and sets it)")

        if problems:
            raise SettingsError(problems)
        return cls(
            telegram_token=Secret(token_text),
            webhook_secret=Secret(secret_text) if secret_text else None,
            telegram_api_url=api_url,
            storage=storage,
            storage_options=storage_options,
            message_retention_days=retention,
            chat_retention_days=chat_retention,
            privacy_contact=env.get("PRIVACY_CONTACT", "").strip() or "messaginebot@gmail.com",
            privacy_policy_url=policy_url or None,
            min_age=min_age,
            flood_rule=FloodRule(limit=flood_limit, refill_s=float(flood_refill)),
            admin_chat_id=admin_chat,
            report_window_s=report_window * 60.0,
            rating_flag_after=rating_flag_after,
            job_secret=Secret(job_secret) if job_secret else None,
            reminder_rules=reminder_rules,
            admin_ids=frozenset(admin_ids),
            recent_partners=recent,
            telegram_timeout_s=float(timeout),
            request_timeout_s=float(request_timeout),
            log_level=log_level,
            structured_logs=log_format == "json" or (
                log_format == "auto" and on_google_cloud(env)),
            project_id=(env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or "").strip()
            or None,
            mixpanel_token=Secret(mixpanel_token) if mixpanel_token else None,
            analytics_key=Secret(analytics_key) if mixpanel_token else None,
            mixpanel_events_url=mixpanel_urls["MIXPANEL_EVENTS_URL"],
            mixpanel_people_url=mixpanel_urls["MIXPANEL_PEOPLE_URL"],
            mixpanel_gdpr_token=(Secret(env["MIXPANEL_GDPR_TOKEN"].strip())
                                 if mixpanel_token and env.get("MIXPANEL_GDPR_TOKEN", "").strip()
                                 else None),
            mixpanel_deletion_url=mixpanel_urls["MIXPANEL_DELETION_URL"],
            hold_links_minutes=hold_links,
            periods=periods,
            erasure_pepper=Secret(pepper),
            album_queue=album_queue,
            album_flush_url=album_url,
            cloud_tasks_endpoint=tasks_endpoint,
        )


_QUEUE_RE = re.compile(r"^projects/[a-z0-9:.-]+/locations/[a-z0-9-]+/queues/[A-Za-z0-9-]{1,100}$")


def _album_tasks(env: Mapping[str, str],
                 problems: list[str]) -> tuple[str | None, str | None, str | None]:
    """ALBUM_QUEUE, ALBUM_FLUSH_URL (required with it) and CLOUD_TASKS_ENDPOINT."""
    queue = env.get("ALBUM_QUEUE", "").strip() or None
    url = env.get("ALBUM_FLUSH_URL", "").strip() or None
    endpoint = env.get("CLOUD_TASKS_ENDPOINT", "").strip() or None
    if queue is not None and not _QUEUE_RE.match(queue):
        problems.append("ALBUM_QUEUE must be projects/PROJECT/locations/LOCATION/queues/QUEUE,"
                        f" not {queue!r}")
    if queue is not None and url is None:
        problems.append("ALBUM_FLUSH_URL must be set with ALBUM_QUEUE (the function's URL)")
    for name, value in (("ALBUM_FLUSH_URL", url), ("CLOUD_TASKS_ENDPOINT", endpoint)):
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            problems.append(f"{name} is not an http(s) URL: {value!r}")
    return queue, url, endpoint


def _storage(env: Mapping[str, str], problems: list[str]) -> tuple[str, object]:
    """The backend and its options: an explicit STORAGE wins, else the registry's ``auto``.

    ``auto`` follows the README's table; the options come with the backend's own checks.
    """
    name = env.get("STORAGE", "auto").strip().lower() or "auto"
    if name not in STORAGE_CHOICES:
        problems.append(f"STORAGE must be one of {', '.join(STORAGE_CHOICES)}, not {name!r}")
        return name, None
    chosen = choose_automatically(env) if name == "auto" else BY_NAME[name]
    return chosen.name, chosen.read(env, problems)


def _analytics(
    env: Mapping[str, str], problems: list[str]
) -> tuple[str, str, dict[str, str | None]]:
    mixpanel_token = env.get("MIXPANEL_TOKEN", "").strip()
    analytics_key = env.get("ANALYTICS_PSEUDONYM_KEY", "").strip()
    if mixpanel_token and len(analytics_key) < 16:
        problems.append(
            "ANALYTICS_PSEUDONYM_KEY must be set (16+ characters) when MIXPANEL_TOKEN is: "
            "it keys the hash that hides Telegram ids from the analytics vendor")
    urls: dict[str, str | None] = {}
    for name in ("MIXPANEL_EVENTS_URL", "MIXPANEL_PEOPLE_URL", "MIXPANEL_DELETION_URL"):
        url = env.get(name, "").strip()
        if url and not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
            problems.append(f"{name} is not an http(s) URL: {url!r}")
        urls[name] = url or None
    return mixpanel_token, analytics_key, urls


def _erasure_pepper(env: Mapping[str, str], token: str, problems: list[str]) -> str:
    """ERASURE_PEPPER: required on Google Cloud; elsewhere derived from the bot token.

    It must never change (a new one would free every erased user from the blocks and
    reports against them), so production sets it once; the token, which BotFather may
    revoke, is good enough only for a bot on one's own machine.
    """
    pepper = env.get("ERASURE_PEPPER", "").strip()
    if pepper and len(pepper) < 16:
        problems.append("ERASURE_PEPPER must be 16+ characters")
    elif not pepper and on_google_cloud(env):
        problems.append(
            "ERASURE_PEPPER is not set: on Google Cloud it is required (16+ characters, kept "
            "for good: it keys the hash that keeps blocks and reports against a user who "
            "erased their data; generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')")
    return pepper or hmac.new(token.encode(), b"messagine erasure pepper",
                              hashlib.sha256).hexdigest()


def _min_age(env: Mapping[str, str], problems: list[str]) -> int:
    min_age = _int(env, "MIN_AGE", 16, 0, 21, problems)
    if 0 < min_age < 13:
        problems.append("MIN_AGE must be 0 (no question) or from 13 to 21")
    return min_age


def _https_url(env: Mapping[str, str], name: str, problems: list[str]) -> str:
    url = env.get(name, "").strip()
    if url and not url.startswith("https://"):
        problems.append(f"{name} must be an https:// URL, not {url!r}")
    return url


def _one_id(env: Mapping[str, str], name: str, problems: list[str]) -> int | None:
    ids = _ids(env, name, problems)
    if len(ids) > 1:
        problems.append(f"{name} must be one chat id")
    return next(iter(ids), None)


def _ids(env: Mapping[str, str], name: str, problems: list[str]) -> set[int]:
    ids: set[int] = set()
    for part in filter(None, (p.strip() for p in env.get(name, "").split(","))):
        if re.fullmatch(r"-?\d+", part):
            ids.add(int(part))
        else:
            problems.append(f"{name} must be comma-separated Telegram ids, not {part!r}")
    return ids


def _int(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, problems: list[str]
) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not re.fullmatch(r"\d+", text) or not low <= int(text) <= high:
        problems.append(f"{name} must be a whole number from {low} to {high}, not {text!r}")
        return default
    return int(text)
