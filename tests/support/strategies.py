"""Hypothesis strategies for the domain's pure functions: ids at their edges, tombstones."""

from __future__ import annotations

from hypothesis import strategies as st

from messagine.domain.erasure import TOMBSTONE_BITS

MAX_ID = 2**63 - 1
"""The largest id SQLite and MongoDB store as a signed 64-bit integer."""

ids = st.one_of(st.sampled_from([0, 1, MAX_ID]), st.integers(min_value=0, max_value=MAX_ID))
"""User, chat and message ids, with 0, 1 and the largest drawn often."""

tombstones = st.integers(min_value=-(2**TOMBSTONE_BITS), max_value=-1)
"""The ids erasure puts in place of a user's."""
