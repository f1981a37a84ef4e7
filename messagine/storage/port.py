"""The repository port: every storage operation the services use, in roles.

Each role is a small protocol (claims, users, lobby, chats, message log, albums, moderation, jobs,
personal records); ``Repository`` is all of them, which each backend implements in one
class, and each service depends only on the roles it uses.

Operations that must be atomic across concurrent function instances (claiming an update,
pairing two users, ending a chat) are single methods here, and each backend implements
them natively; services never read, decide and write back across the network.
Every method may raise ``StorageUnavailable`` for failures a later retry can fix.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S
from messagine.domain.ratings import RatingRule, RatingVerdict
from messagine.domain.retention import Cutoffs
from messagine.models import (
    ChatRecord,
    Counts,
    EndedChat,
    EndReason,
    MatchResult,
    MessageLink,
    ModerationStats,
    Nudge,
    OpenedUpdate,
    Profile,
    Report,
    Retention,
    UserRecords,
    UserState,
)


class StorageUnavailable(Exception):  # noqa: N818 - the name says what the caller must know
    """The store could not be reached or did not answer in time; retrying later may work."""


C = TypeVar("C", bound=type)
T = TypeVar("T")


def wrap_public_methods(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
                        ) -> Callable[[C], C]:
    """A class decorator applying ``wrap`` to every public method the class defines or inherits.

    An adapter uses it to turn its driver's failures into ``StorageUnavailable`` on every
    port method at once.
    """
    def decorate(cls: C) -> C:
        for name, member in {name: member for klass in reversed(cls.__mro__)
                             for name, member in vars(klass).items()}.items():
            if isinstance(member, types.FunctionType) and not name.startswith("_"):
                setattr(cls, name, wrap(member))
        return cls

    return decorate


class UpdateClaims(Protocol):
    """Claiming updates: who processes one, and when it is done (messagine.domain.claims)."""

    @property
    def backend(self) -> str:
        """The backend's short name, for logs ("sqlite", "mongo", "firestore")."""
        ...

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None, owner: str = "", lease_s: float = LEASE_S,
    ) -> OpenedUpdate:
        """Claim ``update_id`` and, for a user's update, refresh the profile and load the state.

        The claim has a state (``messagine.domain.claims``): a new update is claimed in
        progress by ``owner`` with a lease of ``lease_s``; one finished before returns
        ``duplicate=True``, one under another attempt's live lease ``busy=True`` (neither
        changes anything); one whose lease expired is taken over, ``resumed=True``. A
        new user is created with ``default_language`` as their language. The update is
        also counted against the flood limit (``messagine.domain.flood.admit``; ``album``
        is the media_group_id, whose messages count once), in the same call. An update
        with no user (``profile`` None) is claimed done at once.
        """
        ...

    def finish_update(self, update_id: int, user_id: int | None, owner: str) -> None:
        """Mark ``owner``'s claim of ``update_id`` done: a re-delivery is then a duplicate.

        Nothing happens when the claim is not ``owner``'s (another attempt took it over).
        """
        ...

    def release_update(self, update_id: int, owner: str | None = None) -> None:
        """Forget the claim of ``update_id`` so that Telegram's re-delivery is processed.

        With ``owner``, only that attempt's claim is forgotten (not one taken over since).
        """
        ...


class Users(Protocol):
    """A user's state and the choices they make."""

    def get_user(self, user_id: int) -> UserState | None:
        """The user's state, or None for an unknown user."""
        ...

    def set_language(self, user_id: int, language: str) -> UserState:
        """Change the matching language; a waiting user's lobby entry moves with it.

        Refused (state returned unchanged) while the user is in a chat.
        """
        ...

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """Mark that the user blocked (or unblocked) the bot; blocking also leaves the lobby."""
        ...

    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """Record the user's objection to analytics (True) or its withdrawal (False)."""
        ...

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """Record the user's answer to the minimum-age question, with its time.

        A No for a user with no record (erased just before, as a refusal does) creates
        the refusal marker (``domain.age_gate.refusal_marker``) that keeps the gate closed.
        """
        ...

    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """Record the user's choice of /reminders on or off."""
        ...

    def note_newest(self, user_id: int, message_id: int) -> None:
        """Remember the newest message the bot sent the user (the larger id wins).

        Nothing for an unknown user.
        """
        ...

    def counts(self, user_id: int) -> Counts:
        """Totals for /about."""
        ...


class Lobby(Protocol):
    """Waiting for a partner and being paired (messagine.domain.matching)."""

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """Pair the user with the longest-waiting compatible user of their language, or queue.

        Compatible: not among either one's last ``recent_partners`` partners and not
        excluded (reported or blocked) by either. Atomic: no user ends in two chats, or in
        the lobby and a chat at once, and nobody waits while a compatible user also waits.
        """
        ...

    def join_any_language(self, user_id: int) -> bool:
        """Move a waiting user's lobby entry into the any-language pool ("*").

        There only users who opted in too are matched. False if the user is not waiting.
        """
        ...

    def leave_lobby(self, user_id: int) -> bool:
        """Take the user out of the lobby; False if they were not in it."""
        ...

    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """Claim (and mark) up to ``limit`` users to offer the any-language pool.

        Those waiting in a language pool since before ``waiting_before``, not offered yet.
        """
        ...

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """Take out of the lobby up to ``limit`` users waiting since before ``waiting_before``.

        Returns (user, language) for each one this call removed.
        """
        ...


class Chats(Protocol):
    """Chats: ending one, and what a user's last one was."""

    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """End the user's chat once; None if they are in no chat.

        When the chat was ended by this same ``update_id`` before (a re-delivery), the
        ended chat is returned with ``resumed=True`` so the notices can be sent again.
        A /next (``EndReason.NEXT``) never ends a chat that this same update opened: a
        re-delivered /next whose first attempt already ended the old chat and found a new
        partner resumes instead.
        """
        ...

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """The user's most recent chat, active or ended."""
        ...

    def chat_of(self, user_id: int, chat_id: int) -> ChatRecord | None:
        """Chat ``chat_id`` as the user sees it; None unless they were in it."""
        ...

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """How many messages each user of a chat sent (from the message log)."""
        ...


class MessageLog(Protocol):
    """The links between relayed messages and their copies (never content)."""

    def record_message(self, link: MessageLink) -> None:
        """Store the mapping between a relayed message and its copy."""
        ...

    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """The link of a message in ``user_id``'s own chat: one they sent or a copy they got.

        Only links of chat ``chat_id`` count, so nothing maps into an earlier partner's chat.
        """
        ...

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """The sender's last ``limit`` message ids in a chat, oldest first (report evidence)."""
        ...


class AlbumRecords(Protocol):
    """The albums being collected (messagine.domain.albums)."""

    def change_album(self, key: str,
                     rule: Callable[[Album | None], tuple[Album | None, T]]) -> T:
        """Apply ``rule`` to album ``key`` atomically and return what it says.

        ``rule`` gets the record as stored (None: absent) and returns the record to store
        (None: leave it as it is) and its answer. It may run more than once, when another
        instance changed the record in between; only its last run's record is stored.
        """
        ...


class ModerationRecords(Protocol):
    """Reports, exclusions and bans."""

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """Store a report (status "open"); None if the reporter already reported that chat.

        ``reported_key``: the protection key of a reported user who erased their data
        (``ChatRecord.partner_key``), kept so that ``ban_erased`` can ban them.

        One report per reporter and chat: a second press of a reason button (a stale one
        too) or a re-delivery stores nothing more. A user's updates reach the bot one at a
        time, in order, so two reports of one reporter never race.
        """
        ...

    def resolve_report(self, report_id: int, status: str,
                       was: tuple[str, ...] = ("open",)) -> Report | None:
        """Move a report whose status is one of ``was`` to ``status``; None if it was not.

        Of two moderators pressing at once, exactly one moves an open report.
        """
        ...

    def set_banned(self, user_id: int, banned: bool) -> bool:
        """Ban (leaving the lobby too) or unban; False for an unknown user."""
        ...

    def moderation_stats(self, since: float) -> ModerationStats:
        """Totals for /stats; "today" is from ``since``."""
        ...

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """Never match these two users again (a report or a block by ``user_id``).

        ``other_key``: the protection key of an ``other_id`` who erased their data, which
        keeps the exclusion binding if they come back (``domain.matching``).
        """
        ...

    def rate_user(self, rated_id: int, chat_id: int, positive: bool, now: float,
                  rule: RatingRule) -> RatingVerdict:
        """Count a 👍 (``positive``) or 👎 for ``rated_id`` once per chat.

        ``chat_id`` is the chat the rater had with them (``messagine.domain.ratings.rate``
        decides); an unknown user is not counted.
        """
        ...

    def ban_erased(self, report_id: int) -> list[int] | None:
        """Ban the erased user a kept report is about, by the protection key it holds.

        If they come back, ``apply_erased_ban`` bans them; if they are back and waiting in
        the lobby already, they are banned at once: the ids so banned. None if the report
        names no erased user (``messagine.domain.erasure``).
        """
        ...

    def apply_erased_ban(self, user_id: int) -> bool:
        """Ban the user if a moderator banned their protection key while they were erased.

        That is, a kept report about them was decided "ban" (``ban_erased``); True if they
        are banned by it now.
        """
        ...


class Jobs(Protocol):
    """What the scheduled job claims and purges."""

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """Claim up to ``limit`` users inactive since before ``idle_before`` for a reminder.

        Only users active since their last reminder (one per idle period), not blocked,
        not banned and not opted out. Each claim is atomic: two runs at once never claim
        the same user.
        """
        ...

    def release_nudge(self, user_id: int) -> None:
        """Give back a claimed reminder that could not be sent (the next run tries again)."""
        ...

    def count_idle_excluded(self, idle_before: float) -> dict[str, int]:
        """How many due users no reminder goes to, by reason (blocked, banned, opted_out)."""
        ...

    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """Delete at most ``limit`` of each kind past its retention; the count per kind.

        The kinds are ``messages`` (links between a message and its copy), ``claims``
        (claimed update ids), ``chats`` (ended chats), ``reports``, ``exclusions`` and
        ``age_refusals`` (the markers of ``domain.age_gate``; a banned user's stays with
        the ban); every key is always present. A
        call's work is bounded by ``limit``, so a kind that counts ``limit`` may have more
        left: the scheduled job calls again within its time budget. Backends whose
        database also expires records (TTL) delete here too, so the retention the privacy
        policy states holds to the run, not to the TTL monitor's lag.
        """
        ...


class Retained(Protocol):
    """What the scheduled job ends or erases for retention (``domain.retention``)."""

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` chats neither user of which was seen since ``cut.active_before``.

        One user of each, with their language (``end_chat`` gives the other).
        """
        ...

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """Claim up to ``limit`` users due the notice before erasure (``notice_due``).

        Each claim is atomic (two runs never notice the same user twice); (user, language).
        """
        ...

    def release_inactivity_notice(self, user_id: int) -> None:
        """Give back a claimed notice that was not sent (the next run tries again).

        The user is due the notice again, and no erasure counts from the failed attempt:
        the policy promises to write before it erases.
        """
        ...

    def inactive_accounts(self, cut: Cutoffs, limit: int) -> list[int]:
        """Up to ``limit`` users due erasure (``erasure_due``): noticed, and not back since."""
        ...


class PersonalRecords(Protocol):
    """Everything stored about a user: their export and their erasure."""

    def export_user(self, user_id: int) -> UserRecords | None:
        """Everything stored about the user (None for an unknown user)."""
        ...

    def delete_user(self, user_id: int) -> dict[str, int]:
        """Delete or irreversibly anonymise every record about the user; counts per kind.

        The user's chats stay for their partners' history, and the exclusions and reports
        others made about them stay for others' safety, with the user's id replaced by a
        tombstone (one per partner) and, in what is kept for safety, their protection key
        (``messagine.domain.erasure``). Idempotent: a second call counts 0.
        """
        ...

    def unfinished_erasures(self, limit: int) -> list[int]:
        """Up to ``limit`` users whose ``delete_user`` an outage or a crash cut short."""
        ...

    def finish_erasure(self, user_id: int) -> dict[str, int]:
        """Finish an erasure ``unfinished_erasures`` names, as ``delete_user`` would.

        A user who came back since keeps their profile, lobby place, current chat and the
        exclusions they made (their blocks and 👎 protect them); everything else from
        before (links, chats, what others keep about them) is erased or anonymised all the
        same: the erasure they asked for is not undone by coming back.
        """
        ...


class Schema(Protocol):
    """Setting the store up."""

    def init_schema(self) -> None:
        """Create tables or indexes if absent; idempotent (also done on first use)."""
        ...


class Repository(UpdateClaims, Users, Lobby, Chats, MessageLog, AlbumRecords, ModerationRecords,
                 Jobs, Retained, PersonalRecords, Schema, Protocol):
    """The whole storage port, as each backend implements it in one class.

    Services depend on the slice they use (each service module names its own, from the
    roles above), so what a service can do to the store is visible in its signature.
    """
