"""The MongoDB update pipeline of ``open_update``: claim, profile and the flood rule at once.

``messagine.domain.flood.admit`` written as aggregation stages, so that a relayed message
costs one command: the server applies the rule to the stored counters in the same write
that claims the update. ``tests/test_mongo.py`` checks it against the Python rule.
"""

from __future__ import annotations

from typing import Any

from messagine.domain.claims import Claim
from messagine.domain.flood import FloodRule, FloodState
from messagine.models import Profile
from messagine.storage import documents as docs

# Fields that earlier versions stored in user documents: removed on the user's next update.
_LEGACY_FIELDS = ["created_now", "f_throttled", "f_warn", "f_count", "f_start", "f_warned",
                  "f_album", "f_strikes", "f_last_strike", "f_cooldown"]


def _if_null(field_name: str, default: Any) -> dict[str, Any]:
    return {"$ifNull": ["$" + field_name, default]}


def _is_false(expression: Any) -> dict[str, Any]:
    return {"$eq": [expression, False]}  # mongoeco has no $not


def open_update_pipeline(
    update_id: int, profile: Profile, default_language: str, now: float, album: str | None,
    rule: FloodRule, claim: Claim,
) -> list[dict[str, Any]]:
    """Claim, profile refresh, user creation and ``flood.admit``, as one document write.

    The flood counters are the same ``flood`` map as on the other backends; each $set
    stage sees the temporaries the previous one wrote, and the last stage removes them,
    so nothing but the map is stored. ``tests/test_mongo.py`` checks that the stored map
    agrees with the Python rule step by step.
    """
    flood = {name: _if_null("flood." + name, default)
             for name, default in docs.flood_document(FloodState()).items()}
    not_cooling = _is_false("$_cool")
    return [
        {"$set": {
            "_cool": {"$gt": [flood["cooldown_until"], now]},
            "_newwin": {"$gte": [{"$subtract": [now, flood["window_start"]]}, rule.window_s]},
        }},
        {"$set": {"_album": {"$and": [album is not None,
                                      {"$eq": [flood["last_album"], album]},
                                      _is_false("$_newwin")]}}},
        {"$set": {
            "_count": {"$cond": ["$_cool", flood["count"], {"$cond": [
                "$_newwin", 1, {"$add": [flood["count"], {"$cond": ["$_album", 0, 1]}]}]}]},
            "_start": {"$cond": [{"$and": [not_cooling, "$_newwin"]}, now,
                                 flood["window_start"]]},
            "_warned": {"$cond": [{"$and": [not_cooling, "$_newwin"]}, False,
                                  flood["warned"]]},
            "_last_album": {"$cond": ["$_cool", flood["last_album"], album]},
        }},
        {"$set": {"_over": {"$and": [not_cooling, {"$gt": ["$_count", rule.limit]}]}}},
        {"$set": {"_strike": {"$and": ["$_over", _is_false("$_warned")]}}},
        {"$set": {"_strikes": {"$cond": ["$_strike", {"$add": [{"$cond": [
            {"$gt": [{"$subtract": [now, flood["last_strike"]]},
                     rule.strikes_forgotten_after_s]},
            0, flood["strikes"]]}, 1]}, flood["strikes"]]}}},
        {"$set": {
            "flood": {
                "window_start": "$_start", "count": "$_count",
                "warned": {"$or": ["$_warned", "$_strike"]}, "strikes": "$_strikes",
                "last_strike": {"$cond": ["$_strike", now, flood["last_strike"]]},
                "cooldown_until": {"$cond": ["$_strike", {"$add": [now, {"$min": [
                    rule.max_cooldown_s, {"$multiply": [rule.first_cooldown_s, {"$pow": [
                        2, {"$subtract": ["$_strikes", 1]}]}]}]}]}, flood["cooldown_until"]]},
                "last_album": "$_last_album",
            },
            **{name: {"$literal": value}
               for name, value in docs.profile_fields(profile, now).items()},
            **{name: _if_null(name, value)
               for name, value in docs.new_user_fields(default_language, now).items()},
            "recent_updates": {"$slice": [{"$concatArrays": [
                _if_null("recent_updates", []), [update_id]]}, -docs.RECENT_UPDATES]},
            # The claims map: stale entries dropped, this update's claim put in.
            "claims": {"$arrayToObject": {"$concatArrays": [
                {"$filter": {"input": {"$objectToArray": _if_null("claims", {})}, "as": "c",
                             "cond": {"$gt": ["$$c.v.lease_until",
                                              now - docs.STALE_CLAIM_S]}}},
                [{"k": docs.claim_key(update_id),
                  "v": {"$literal": docs.claim_entry(claim)}}]]}},
        }},
        {"$unset": ["_cool", "_newwin", "_album", "_count", "_start", "_warned", "_last_album",
                    "_over", "_strike", "_strikes", *_LEGACY_FIELDS]},
    ]
