"""The records the services and the repository exchange.

Plain frozen dataclasses, free of any database or Telegram type, so that every storage
backend returns the same shapes and the services can be tested on any of them.
Times are UNIX seconds (UTC) as floats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the domain imports the models, not the other way
    from messagine.domain.albums import Album


@dataclass(frozen=True, slots=True)
class Profile:
    """What the privacy policy says we store of a Telegram account, refreshed on every update."""

    user_id: int
    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None


@dataclass(frozen=True, slots=True)
class ActiveChat:
    """The chat a user is in, seen from that user's side."""

    chat_id: int
    partner_id: int
    partner_language: str
    started_at: float


@dataclass(frozen=True, slots=True)
class UserState:
    """A user as the services need them for one update."""

    user_id: int
    language: str
    is_new: bool
    blocked: bool
    banned: bool
    chat: ActiveChat | None
    waiting_since: float | None
    analytics_opt_out: bool = False
    age_confirmed: bool = False
    language_code: str | None = None
    """Telegram's language of the user's app: the interface falls back to it."""
    reminders_enabled: bool = True
    newest_message: int = 0
    """The newest message the bot sent the user (``Users.note_newest``); copies aside."""
    age_refused: bool = False
    """Answered No to the age question: the gate stays closed (``domain.age_gate``)."""

    @property
    def waiting(self) -> bool:
        """True while the user is in the lobby."""
        return self.waiting_since is not None


@dataclass(frozen=True, slots=True)
class OpenedUpdate:
    """The result of claiming an update: a duplicate, busy, or the sender's state (if any).

    ``duplicate``: finished before, nothing to do; ``busy``: another attempt holds a live
    lease on it (answer 503, do nothing); ``resumed``: the attempt that held it died (its
    lease expired) and this one took it over. ``throttled``: the sender is over the flood
    limit, so the update is dropped; ``warn``: its sender is told which update that was.
    """

    duplicate: bool
    user: UserState | None = None
    throttled: bool = False
    warn: bool = False
    busy: bool = False
    resumed: bool = False


class MatchOutcome(enum.Enum):
    """What a search for a partner ended in."""

    MATCHED = "matched"
    WAITING = "waiting"
    ALREADY_WAITING = "already_waiting"
    IN_CHAT = "in_chat"
    AGE_REFUSED = "age_refused"
    """The stored user answered No to the age question (``domain.age_gate``)."""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of ``Repository.find_partner``.

    ``chat`` is set for MATCHED and IN_CHAT. ``resumed`` is True when the chat was made by
    this same update before (a re-delivery after a failure), so the notices are sent again.
    ``waiting_count`` is how many users wait in the pool, the searcher included;
    ``partner_waiting_since`` is when the partner of a new chat joined the lobby.
    """

    outcome: MatchOutcome
    chat: ActiveChat | None = None
    resumed: bool = False
    waiting_count: int = 0
    partner_waiting_since: float | None = None


class EndReason(enum.Enum):
    """How a chat ended."""

    IDLE = "idle"
    """Nobody wrote for IDLE_CHAT_HOURS: the scheduled job ended it."""
    EXIT = "exit"
    NEXT = "next"
    BLOCKED = "blocked"
    PARTNER_UNREACHABLE = "partner_unreachable"
    DELETED = "deleted"
    REPORT = "report"
    BLOCK = "block"
    BANNED = "banned"


@dataclass(frozen=True, slots=True)
class EndedChat:
    """A chat that ``Repository.end_chat`` ended (or had ended for this same update)."""

    chat_id: int
    partner_id: int
    partner_language: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class MessageLink:
    """One relayed message: the original in the sender's chat and its copy at the partner.

    No content: only ids, the content type and the time, which is all that replies, edits
    and deletions need.
    """

    chat_id: int
    sender_id: int
    sender_message_id: int
    recipient_id: int
    copy_message_id: int
    content_type: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class Counts:
    """The numbers /about shows."""

    users: int
    active_chats: int
    previous_chats: int
    my_previous_chats: int
    waiting: int


@dataclass(frozen=True, slots=True)
class ChatRecord:
    """One chat of a user, for their data export: the partner only as an id to be labelled."""

    chat_id: int
    partner_id: int
    language: str
    started_at: float
    ended_at: float | None
    end_reason: str | None
    ended_by_user: bool | None
    opened_by_update: int | None = None
    """The update that made the chat (a re-delivered search resumes it)."""
    closed_by_update: int | None = None
    """The update that ended it (a re-delivered ending resumes it)."""
    partner_key: str | None = None
    """The protection key of a partner who erased their data (``domain.erasure``), kept so
    that a block or report made afterwards still binds them if they come back."""


@dataclass(frozen=True, slots=True)
class LobbyEntry:
    """A user's place in the lobby: the pool they wait in and since when."""

    language: str
    since: float
    offered: bool = False
    """Whether the any-language pool was offered during this wait."""
    avoid: tuple[int, ...] = ()
    """Whom the entry must not be paired with (the document stores keep it in the entry)."""


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """The user's own record as stored, the same on every backend (see /mydata)."""

    user_id: int
    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None
    language: str
    first_seen: float
    last_seen: float
    blocked: bool = False
    banned: bool = False
    analytics_opt_out: bool = False
    age_answer: str | None = None
    age_answered_at: float | None = None
    reminders_enabled: bool = True
    nudge_pending: bool = True
    reminded_at: float | None = None
    lobby: LobbyEntry | None = None
    ratings_up: int = 0
    ratings_down: int = 0
    ratings_flagged: bool = False
    ratings_counted_at: tuple[float, ...] = ()
    """When the ratings of the chats counted within the report window were counted."""
    newest_message: int = 0
    notice_pending: bool = True
    """Active since the last inactivity notice (``domain.retention``)."""
    noticed_at: float | None = None


@dataclass(frozen=True, slots=True)
class UserRecords:
    """Everything stored about one user, as the repository holds it (see /mydata)."""

    profile: StoredProfile
    chats: list[ChatRecord] = field(default_factory=list)
    messages: list[MessageLink] = field(default_factory=list)
    exclusions: list[tuple[int, str, float]] = field(default_factory=list)
    """(other user, reason, time) for each pair this user excluded (block or report)."""
    reports: list[Report] = field(default_factory=list)
    """The reports this user made."""
    received: list[MessageLink] = field(default_factory=list)
    """The links of the messages relayed to this user."""
    excluded_by: list[tuple[int, str, float]] = field(default_factory=list)
    """(other user, reason, time) for each exclusion of this user by someone else."""
    reports_about: list[Report] = field(default_factory=list)
    """The reports others made about this user (the reporter is never exported)."""
    flood: dict[str, Any] = field(default_factory=dict)
    """The flood counters as stored (``messagine.domain.flood.FloodState``)."""
    recent_updates: list[int] = field(default_factory=list)
    """The update ids the document stores keep with the user, to recognise re-deliveries."""
    claims: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Updates of this user being processed: update id -> owner, lease and attempts."""
    albums: list[Album] = field(default_factory=list)
    """The albums this user sent in the last day: their items' message ids and types."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long records are kept, in seconds."""

    messages_s: float
    chats_s: float
    claims_s: float = 86_400.0
    age_refusals_s: float = 30 * 86_400.0
    """An age refusal's marker (``domain.age_gate``)."""
    reports_s: float = 365 * 86_400.0
    exclusions_s: float = 365 * 86_400.0


@dataclass(frozen=True, slots=True)
class Report:
    """A user's report about a partner, for the moderators."""

    report_id: int
    reporter_id: int
    reported_id: int
    chat_id: int
    reason: str
    created_at: float
    status: str


@dataclass(frozen=True, slots=True)
class ModerationStats:
    """The numbers /stats shows the admins."""

    users: int
    waiting: int
    active_chats: int
    chats_today: int
    reports_today: int


@dataclass(frozen=True, slots=True)
class Nudge:
    """A user claimed for a reminder, with what the reminder depends on."""

    user_id: int
    language: str
    state: str
    """idle, waiting or chatting."""


@dataclass(frozen=True, slots=True)
class ReminderRules:
    """When users are nudged and when the lobby lets them go (seconds)."""

    remind_after_s: float
    lobby_timeout_s: float
    run_budget_s: float
    any_language_after_s: float = 900.0


@dataclass(frozen=True, slots=True)
class Periods:
    """Retention periods of the records the scheduled job ends or deletes."""

    age_refusal_days: int = 30
    """AGE_REFUSAL_DAYS: how long an age refusal's marker keeps the gate closed."""
    idle_chat_hours: int = 72
    """IDLE_CHAT_HOURS: a chat with no message either way this long is ended."""
    report_days: int = 365
    """REPORT_RETENTION_DAYS: how long reports are kept."""
    exclusion_days: int = 365
    """EXCLUSION_RETENTION_DAYS: how long blocks and report exclusions are kept."""
    inactive_days: int = 365
    """INACTIVE_ACCOUNT_DAYS: an account unused this long is erased."""
    notice_days: int = 14
    """INACTIVE_NOTICE_DAYS: how long before that erasure its one notice goes out."""
