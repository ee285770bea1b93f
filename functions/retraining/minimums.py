"""Amazon Personalize's minimums for training on an interactions dataset, checked the same way everywhere
(the retraining run's data guard, `interactions preview` and the demo)."""

from __future__ import annotations

MIN_INTERACTIONS = 1_000
MIN_ACTIVE_USERS = 25
MIN_INTERACTIONS_PER_ACTIVE_USER = 2


def shortfalls(rows: int, active_users: int) -> list[str]:
    """Each minimum the dataset misses, e.g. `812 interactions < 1,000`; empty when training can start.
    `active_users` counts users with at least MIN_INTERACTIONS_PER_ACTIVE_USER interactions."""
    missed = []
    if rows < MIN_INTERACTIONS:
        missed.append(f"{rows:,} interactions < {MIN_INTERACTIONS:,}")
    if active_users < MIN_ACTIVE_USERS:
        missed.append(f"{active_users:,} users with ≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} interactions "
                      f"< {MIN_ACTIVE_USERS:,}")
    return missed
