"""A bare contact row (a name and a source, no email or phone), for tests of
stages and boards that need people but not their addresses."""

from __future__ import annotations

from cxm_cli import clock as clocks


def add_contact(db, clock, name="Ana Lima", source="web") -> int:
    now = clocks.now_iso(clock)
    return (
        db["contacts"]
        .insert(
            {
                "display_name": name,
                "source": source,
                "custom": "{}",
                "created_at": now,
                "updated_at": now,
            }
        )
        .last_pk
    )
