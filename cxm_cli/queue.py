"""The queue of due steps: scheduling, claiming with a lease, finishing.

A runner claims due steps in one ``BEGIN IMMEDIATE`` transaction, writing its
id and a lease end on each row. Only the claimer may finish a row, and only
while its claim stands; a row whose lease ran out (its runner died) is claimed
again by the next runner. So two runners never run one step, and a killed
runner loses nothing.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

LIVE_STATUSES = ("pending", "claimed")
FINAL_STATUSES = ("done", "skipped", "failed", "cancelled")


_INSERT_STEP = """
    INSERT INTO due_steps (enrollment_id, contact_id, sequence, step_index,
        step_label, kind, due_at, status, note, created_at, step_key)
    VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)
"""


def schedule_steps(db, steps: list[tuple], *, clock) -> None:
    """Queue many next steps with one statement: each step is (enrollment_id,
    contact_id, sequence, step_index, step_label, kind, due_at, note,
    step_key)."""
    created_at = clocks.now_iso(clock)
    db.conn.executemany(
        _INSERT_STEP,
        [
            (*step[:6], clocks.iso(step[6]), step[7], created_at, step[8])
            for step in steps
        ],
    )


def schedule_step(
    db,
    *,
    enrollment_id: int,
    contact_id: int,
    sequence: str,
    step_index: int,
    step_label: str | None,
    kind: str,
    due_at: datetime,
    note: str,
    clock,
    step_key: str | None = None,
) -> int:
    """Queue the next step of an enrollment; returns its id."""
    cursor = db.execute(
        _INSERT_STEP,
        [
            enrollment_id,
            contact_id,
            sequence,
            step_index,
            step_label,
            kind,
            clocks.iso(due_at),
            note,
            clocks.now_iso(clock),
            step_key,
        ],
    )
    return cursor.lastrowid


def claim_due(
    db, runner_id: str, *, clock, limit: int = 50, lease_seconds: float = 300
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due steps (and steps whose lease ran out)."""
    now = clocks.now_iso(clock)
    lease_until = clocks.iso(clock.now() + timedelta(seconds=lease_seconds))
    with write_transaction(db):
        cursor = db.execute(
            """
            UPDATE due_steps
            SET status = 'claimed', claimed_by = ?, lease_until = ?,
                claims = claims + 1
            WHERE id IN (
                SELECT id FROM (
                    SELECT * FROM (
                        SELECT id, due_at FROM due_steps
                        WHERE status = 'pending' AND due_at <= ?
                        ORDER BY due_at, id
                        LIMIT ?
                    )
                    UNION ALL
                    SELECT * FROM (
                        SELECT id, due_at FROM due_steps
                        WHERE status = 'claimed' AND lease_until < ?
                        ORDER BY due_at, id
                        LIMIT ?
                    )
                )
                ORDER BY due_at, id
                LIMIT ?
            )
            RETURNING *
            """,
            # Each side is limited on its own, so the index hands over only
            # the first rows in order: sorting every pending step instead
            # made each claim cost as much as the whole queue.
            [runner_id, lease_until, now, limit, now, limit, limit],
        )
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    rows.sort(key=lambda row: (row["due_at"], row["id"]))
    if rows:
        log.debug("runner %s claimed %d steps", runner_id, len(rows))
    return rows


def claimed_before(row: dict[str, Any]) -> bool:
    """Whether a runner had this due step before and did not finish it: it
    may have sent, or left its message row 'sending', before it died."""
    return row["claims"] > 1 or row["attempts"] > 0


def still_claimed(db, step_id: int, runner_id: str) -> bool:
    return (
        fetch_one(
            db,
            "SELECT 1 AS x FROM due_steps WHERE id = ? AND status = 'claimed' "
            "AND claimed_by = ?",
            [step_id, runner_id],
        )
        is not None
    )


def renew_claim(
    db, step_id: int, runner_id: str, *, clock, lease_seconds: float = 300
) -> bool:
    """Extend a claim before slow work; False when the claim was lost."""
    held = renew_claims(
        db, [step_id], runner_id, clock=clock, lease_seconds=lease_seconds
    )
    return step_id in held


def renew_claims(
    db, step_ids: list[int], runner_id: str, *, clock, lease_seconds: float = 300
) -> set[int]:
    """:func:`renew_claim` for many steps; the ids whose claims still stand."""
    if not step_ids:
        return set()
    lease_until = clocks.iso(clock.now() + timedelta(seconds=lease_seconds))
    marks = ", ".join("?" for _ in step_ids)
    rows = db.conn.execute(
        f"UPDATE due_steps SET lease_until = ? WHERE id IN ({marks}) "
        "AND status = 'claimed' AND claimed_by = ? RETURNING id",
        [lease_until, *step_ids, runner_id],
    ).fetchall()
    return {row[0] for row in rows}


def claimed_of(db, step_ids: list[int], runner_id: str) -> set[int]:
    """Which of these steps ``runner_id`` still holds (:func:`still_claimed`
    for many)."""
    if not step_ids:
        return set()
    marks = ", ".join("?" for _ in step_ids)
    rows = db.conn.execute(
        f"SELECT id FROM due_steps WHERE id IN ({marks}) AND status = 'claimed' "
        "AND claimed_by = ?",
        [*step_ids, runner_id],
    ).fetchall()
    return {row[0] for row in rows}


def keep_claim(
    db, row: dict[str, Any], runner_id: str, *, clock, lease_seconds: float = 300
) -> bool:
    """Make sure a claim stands, with at least half a lease left, before slow work.

    A claim taken moments ago (the usual case: a batch is claimed, then run)
    still has most of its lease, so it is only checked, which needs no write
    transaction; an older one is extended. False when the claim was lost.
    """
    lease_until = row.get("lease_until")
    if lease_until:
        left = clocks.parse(lease_until) - clock.now()
        if left.total_seconds() > lease_seconds / 2:
            return still_claimed(db, row["id"], runner_id)
    return renew_claim(
        db, row["id"], runner_id, clock=clock, lease_seconds=lease_seconds
    )


def keep_claims(
    db,
    rows: list[dict[str, Any]],
    runner_id: str,
    *,
    clock,
    lease_seconds: float = 300,
) -> set[int]:
    """:func:`keep_claim` for many steps; the ids whose claims still stand.

    Checked only (no write) while every claim has more than half its lease
    left, as a batch claimed moments ago has; extended all together otherwise.
    """
    now = clock.now()
    fresh = all(
        row.get("lease_until")
        and (clocks.parse(row["lease_until"]) - now).total_seconds() > lease_seconds / 2
        for row in rows
    )
    step_ids = [row["id"] for row in rows]
    if fresh:
        return claimed_of(db, step_ids, runner_id)
    return renew_claims(
        db, step_ids, runner_id, clock=clock, lease_seconds=lease_seconds
    )


def finish(
    db, step_id: int, runner_id: str, status: str, *, clock, error: str | None = None
) -> bool:
    """Close a claimed step; False (and no change) when the claim was lost."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final status: {status}")
    cursor = db.execute(
        """
        UPDATE due_steps
        SET status = ?, finished_at = ?, last_error = COALESCE(?, last_error),
            lease_until = NULL
        WHERE id = ? AND status = 'claimed' AND claimed_by = ?
        """,
        [status, clocks.now_iso(clock), error, step_id, runner_id],
    )
    return cursor.rowcount == 1


def finish_done(db, step_ids: list[int], runner_id: str, *, clock) -> None:
    """:func:`finish` as done for many steps whose claims were checked."""
    now = clocks.now_iso(clock)
    db.conn.executemany(
        "UPDATE due_steps SET status = 'done', finished_at = ?, lease_until = NULL "
        "WHERE id = ? AND status = 'claimed' AND claimed_by = ?",
        [(now, step_id, runner_id) for step_id in step_ids],
    )


def release(
    db,
    step_id: int,
    runner_id: str,
    due_at: datetime,
    *,
    note: str,
    error: str | None = None,
    failed_attempt: bool = False,
) -> bool:
    """Put a claimed step back to wait until ``due_at`` (deferral or retry).

    Its claim count starts again: it counts claims that never finished (a
    runner crashing on the step), and being put back is finishing. A step a
    cap or quiet hours defers day after day is not a crash loop.
    """
    cursor = db.execute(
        """
        UPDATE due_steps
        SET status = 'pending', due_at = ?, note = ?, claimed_by = NULL,
            lease_until = NULL, last_error = COALESCE(?, last_error),
            attempts = attempts + ?, claims = 0
        WHERE id = ? AND status = 'claimed' AND claimed_by = ?
        """,
        [clocks.iso(due_at), note, error, int(failed_attempt), step_id, runner_id],
    )
    return cursor.rowcount == 1


def cancel_live(db, enrollment_id: int, *, clock, reason: str) -> list[dict[str, Any]]:
    """Cancel an enrollment's pending or claimed step; returns what was cancelled.

    A step a runner is sending right now is cancelled too: the runner's finish
    then fails and it records nothing more.
    """
    return cancel_live_many(db, [enrollment_id], clock=clock, reason=reason)


def cancel_live_many(
    db, enrollment_ids: list[int], *, clock, reason: str
) -> list[dict[str, Any]]:
    """:func:`cancel_live` for many enrollments, with one statement."""
    if not enrollment_ids:
        return []
    marks = ", ".join("?" for _ in enrollment_ids)
    # One statement is atomic on its own: no transaction of its own needed.
    cursor = db.execute(
        f"""
        UPDATE due_steps
        SET status = 'cancelled', finished_at = ?, last_error = ?,
            lease_until = NULL
        WHERE enrollment_id IN ({marks}) AND status IN ('pending', 'claimed')
        RETURNING id, enrollment_id, sequence, step_index, step_label, kind
        """,
        [clocks.now_iso(clock), reason, *enrollment_ids],
    )
    columns = [column[0] for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def backoff_delay(
    attempt: int,
    *,
    base_seconds: float = 60,
    cap_seconds: float = 3600,
    rng: random.Random | None = None,
) -> timedelta:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based).

    The delay is drawn between half and all of ``base * 2**(attempt-1)``
    (capped), so retries of many steps that failed together spread out.
    """
    ceiling = min(cap_seconds, base_seconds * (2 ** max(0, attempt - 1)))
    chooser = rng or random
    return timedelta(seconds=ceiling * (0.5 + chooser.random() / 2))


def next_due_at(db) -> datetime | None:
    row = fetch_one(
        db,
        "SELECT MIN(due_at) AS due FROM due_steps WHERE status = 'pending'",
    )
    pending = row["due"] if row else None
    row = fetch_one(
        db,
        "SELECT MIN(lease_until) AS due FROM due_steps WHERE status = 'claimed'",
    )
    expiring = row["due"] if row else None
    candidates = [clocks.parse(value) for value in (pending, expiring) if value]
    return min(candidates) if candidates else None


def queue_counts(db, *, clock) -> dict[str, int]:
    now = clocks.now_iso(clock)
    row = fetch_one(
        db,
        """
        SELECT
            SUM(status = 'pending' AND due_at <= ?) AS due_now,
            SUM(status = 'pending' AND due_at > ?) AS scheduled,
            SUM(status = 'claimed') AS claimed,
            SUM(status = 'claimed' AND lease_until < ?) AS lease_expired,
            SUM(status = 'failed') AS failed,
            SUM(status = 'done') AS done
        FROM due_steps
        """,
        [now, now, now],
    )
    return {key: int(value or 0) for key, value in (row or {}).items()}
