"""Live A/B assignment: a user goes to the same arm every time, in proportion to the arms' weights.

The arm is a pure function of (experiment salt, user id): SHA-256 of both gives a point in [0, 1), and the arms
split [0, 1) in order of their weights. No state is needed to stay consistent across sessions, server restarts
or several server processes; the assignment is stored with each session all the same, so reports read it back
rather than recompute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = []


def unit_hash(user_id: str, salt: str = "") -> float:
    """A uniform point in [0, 1) determined by the user id (and the experiment's salt)."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_arm(user_id: str, weights: Mapping[str, float], salt: str = "") -> str:
    """The arm of `user_id`: arms cover [0, 1) in their given order, each in proportion to its weight."""
    total = sum(weights.values())
    if not weights or total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"arm weights must be >= 0 and not all 0, got {dict(weights)}")
    point, edge = unit_hash(user_id, salt) * total, 0.0
    for arm, weight in weights.items():
        edge += weight
        if point < edge:
            return arm
    return [arm for arm, weight in weights.items() if weight > 0][-1]  # float rounding at the very top
