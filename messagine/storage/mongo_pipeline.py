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
    return [
        {"$set": {"_level": {"$max": [0.0, {"$subtract": [flood["level"], {"$divide": [
            {"$max": [0.0, {"$subtract": [now, flood["at"]]}]}, rule.refill_s]}]}]}}},
        {"$set": {"_cost": {"$cond": [{"$and": [
            album is not None, {"$eq": [flood["last_album"], {"$literal": album}]}]}, 0.0, 1.0]}}},
        {"$set": {"_ok": {"$lte": [{"$add": ["$_level", "$_cost"]}, rule.limit]}}},
        {"$set": {
            # A computed map replaces the stored one (an object literal would merge).
            "_flood": {
                "level": {"$cond": ["$_ok", {"$add": ["$_level", "$_cost"]}, "$_level"]},
                "at": {"$max": [flood["at"], now]},
                "last_album": {"$cond": ["$_ok", {"$literal": album}, flood["last_album"]]},
            },
        }},
        {"$set": {
            "flood": "$_flood",
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
        {"$unset": ["_level", "_cost", "_ok", "_flood", *_LEGACY_FIELDS]},
    ]
