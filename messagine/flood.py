"""The flood limit, kept importable here: the rule lives in ``messagine.domain.flood``."""

from messagine.domain.flood import FloodRule, FloodState, FloodVerdict, admit

__all__ = ["FloodRule", "FloodState", "FloodVerdict", "admit"]
