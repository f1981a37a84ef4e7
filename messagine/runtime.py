"""The composition root: builds the repository, the bot and the services once per instance.

Nothing here touches the network or the database: clients connect on first use, so a
cold start pays only for imports, and an instance reuses everything across requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import telebot

from messagine.albums import AlbumRelay, Schedule
from messagine.analytics import Analytics, MixpanelAnalytics, NoAnalytics
from messagine.catalog import Catalog
from messagine.conversation import Conversation
from messagine.domain import claims
from messagine.handlers import Handlers
from messagine.logs import configure_logging
from messagine.models import Retention
from messagine.moderation import Moderation, ModerationSettings
from messagine.pipeline import Pipeline
from messagine.privacy import Privacy, PrivacyTerms
from messagine.reactions import Reactions
from messagine.relay import Relay
from messagine.reminders import Reminders
from messagine.routes import Services
from messagine.schedule import CloudTasksSchedule, TimerSchedule
from messagine.settings import Settings
from messagine.storage import open_repository
from messagine.storage.port import Repository
from messagine.telegram import Telegram, configure_transport


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything one instance needs to serve updates."""

    settings: Settings
    repository: Repository
    telegram: Telegram
    catalog: Catalog
    pipeline: Pipeline
    analytics: Analytics
    reminders: Reminders
    albums: AlbumRelay


def build_runtime(
    settings: Settings, *, repository: Repository | None = None,
    clock: Callable[[], float] = time.time,
) -> Runtime:
    """Wire the bot for ``settings`` (``repository`` overrides the configured one, for tests)."""
    configure_logging(settings.log_level, structured=settings.structured_logs,
                      project_id=settings.project_id)
    configure_transport(settings.telegram_api_url, settings.telegram_timeout_s)
    repository = repository or open_repository(settings)
    bot = telebot.TeleBot(settings.telegram_token.reveal(), threaded=False, parse_mode=None)
    telegram = Telegram(bot)
    catalog = Catalog()
    analytics = open_analytics(settings)
    conversation = Conversation(repository, telegram, catalog, settings.recent_partners, clock,
                                analytics, settings.min_age, settings.privacy_contact)
    albums = AlbumRelay(repository, telegram, catalog, conversation, clock, analytics,
                        claims.lease_for(settings.request_timeout_s))
    albums.schedule = open_schedule(settings, albums)
    relay = Relay(repository, telegram, catalog, conversation, clock, analytics,
                  settings.hold_links_minutes, albums)
    terms = PrivacyTerms(settings.privacy_contact, settings.privacy_policy_url,
                         settings.message_retention_days, settings.chat_retention_days,
                         settings.min_age, settings.storage, settings.periods,
                         rating_flag_after=settings.rating_flag_after)
    privacy = Privacy(repository, telegram, catalog, conversation, analytics, terms, clock)
    moderation = Moderation(repository, telegram, catalog, conversation, analytics,
                            ModerationSettings(settings.admin_ids, settings.admin_chat_id,
                                               settings.report_window_s,
                                               settings.rating_flag_after), clock)
    Handlers(Services(conversation, relay, privacy, moderation,
                      Reactions(repository, telegram)),
             telegram, catalog, analytics).register(bot)
    retention = Retention(messages_s=settings.message_retention_days * 86_400.0,
                          chats_s=settings.chat_retention_days * 86_400.0,
                          age_refusals_s=settings.periods.age_refusal_days * 86_400.0,
                          reports_s=settings.periods.report_days * 86_400.0,
                          exclusions_s=settings.periods.exclusion_days * 86_400.0)
    pipeline = Pipeline(bot, repository, telegram, catalog, clock, analytics,
                        settings.request_timeout_s)
    reminders = Reminders(repository, telegram, catalog, settings.reminder_rules, clock,
                          retention, settings.periods, analytics)
    return Runtime(settings, repository, telegram, catalog, pipeline, analytics, reminders,
                   albums)


def open_schedule(settings: Settings, albums: AlbumRelay) -> Schedule:
    """Cloud Tasks when ALBUM_QUEUE is set (Google Cloud), else a timer in this process."""
    if settings.album_queue is None or settings.album_flush_url is None:
        return TimerSchedule(albums.flush)
    secret = settings.webhook_secret.reveal() if settings.webhook_secret is not None else ""
    return CloudTasksSchedule(settings.album_queue, settings.album_flush_url, secret,
                              endpoint=settings.cloud_tasks_endpoint)


def open_analytics(settings: Settings) -> Analytics:
    """Mixpanel when MIXPANEL_TOKEN is set, otherwise nothing at all."""
    if settings.mixpanel_token is None or settings.analytics_key is None:
        return NoAnalytics()
    gdpr = settings.mixpanel_gdpr_token
    return MixpanelAnalytics(settings.mixpanel_token.reveal(), settings.analytics_key.reveal(),
                             events_url=settings.mixpanel_events_url,
                             people_url=settings.mixpanel_people_url,
                             gdpr_token=gdpr.reveal() if gdpr is not None else None,
                             deletion_url=settings.mixpanel_deletion_url)


class LazyRuntime:
    """A runtime built from the environment on first use, then reused (one per process)."""

    def __init__(self, *, require_webhook_secret: bool) -> None:
        self._require_webhook_secret = require_webhook_secret
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        """The instance's runtime; raises ``SettingsError`` while the configuration is invalid."""
        runtime = self._runtime
        if runtime is None:
            with self._lock:
                if self._runtime is None:
                    settings = Settings.from_env(
                        require_webhook_secret=self._require_webhook_secret)
                    self._runtime = build_runtime(settings)
                runtime = self._runtime
        return runtime
