"""No pile-ups: per-contact message caps and per-sender rate limits.

Caps count a contact's outbound messages across every sequence (and manual
sends), from the ``messages`` table. ``[caps]`` in cxm.toml sets them per
channel: ``sms_per_day`` counts the contact's local calendar day,
``sms_per_week`` a rolling seven days. Florida and Oklahoma contacts also get
the legal maximum of three texts or calls in any 24 hours, which no sequence
can switch off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from cxm_cli import clock as clocks
from cxm_cli.sendwindow import STRICT_STATES, contact_zone, strict_state
from cxm_cli.store import fetch_one, write_transaction
from cxm_cli.waits import local_moment

log = logging.getLogger(__name__)

DEFAULT_CAPS = {
    "sms_per_day": 1,
    "sms_per_week": 3,
    "email_per_day": 2,
    "email_per_week": 5,
}
DEFAULT_RATES_PER_SECOND = {"sms": 1.0}
STRICT_LIMIT = 3
STRICT_CHANNELS = ("sms", "voicemail")


@dataclass(frozen=True)
class CapDecision:
    allowed: bool
    until: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Rule:
    channels: tuple[str, ...]
    limit: int
    period: str  # day (local calendar day) | week (rolling 7d) | 24h (rolling)
    label: str
    legal: bool = False


def _rules(workspace, contact: dict, channel: str) -> list[_Rule]:
    configured = {**DEFAULT_CAPS, **(workspace.setting("caps", {}) or {})}
    rules = []
    for period in ("day", "week"):
        limit = int(configured.get(f"{channel}_per_{period}", 0) or 0)
        if limit > 0:
            rules.append(
                _Rule((channel,), limit, period, f"{limit} {channel} per {period}")
            )

    state = strict_state(contact)
    if state and channel in STRICT_CHANNELS:
        rules.append(
            _Rule(
                STRICT_CHANNELS,
                STRICT_LIMIT,
                "24h",
                f"{STRICT_STATES[state]}: {STRICT_LIMIT} texts or calls per 24 hours",
                legal=True,
            )
        )
    return rules


def check_caps(
    db,
    workspace,
    contact: dict,
    channel: str,
    *,
    clock,
    exempt: bool = False,
    planned: list[tuple[str, datetime]] | None = None,
    due_step_id: int | None = None,
    recent: list[tuple[str, str, int | None]] | None = None,
) -> CapDecision:
    """May one more message go to ``contact`` on ``channel`` at ``clock.now()``?

    ``exempt`` (a sequence or step with ``caps: false``, such as appointment
    reminders) skips the workspace's caps but never a state's legal limit.
    ``recent`` is the contact's counted sends from :func:`recent_sends`, read
    for a whole batch; without it each rule reads them itself.
    """
    now = clock.now()
    zone = contact_zone(workspace, contact)
    for rule in _rules(workspace, contact, channel):
        if exempt and not rule.legal:
            continue
        if rule.period == "day":
            local = now.astimezone(zone)
            since = local_moment(local.date(), time.min, zone)
            times = _sent_times(
                db,
                contact["id"],
                rule.channels,
                since,
                now,
                planned,
                due_step_id,
                recent,
            )
            if len(times) >= rule.limit:
                tomorrow = local_moment(
                    local.date() + timedelta(days=1), time.min, zone
                )
                return CapDecision(False, tomorrow, f"cap: {rule.label}")
            continue

        period = timedelta(days=7) if rule.period == "week" else timedelta(hours=24)
        # A send exactly one period ago has left the window: the cap lifts at
        # the moment it said it would, not a pass later.
        times = _sent_times(
            db,
            contact["id"],
            rule.channels,
            now - period + timedelta(microseconds=1),
            now,
            planned,
            due_step_id,
            recent,
        )
        if len(times) >= rule.limit:
            # The cap lifts when the oldest counted message leaves the window.
            until = times[len(times) - rule.limit] + period
            return CapDecision(False, until, f"cap: {rule.label}")
    return CapDecision(True)


def _sent_times(
    db,
    contact_id,
    channels,
    since: datetime,
    until: datetime,
    planned,
    due_step_id,
    recent=None,
):
    if recent is not None and not recent and not planned:
        return []  # most contacts: nothing sent in the last week
    if recent is not None:
        low, high, own = clocks.iso(since), clocks.iso(until), due_step_id or -2
        rows = sorted(
            (at,)
            for channel, at, step_id in recent
            if channel in channels
            and low <= at <= high
            and (step_id if step_id is not None else -1) != own
        )
    else:
        rows = _counted_rows(db, contact_id, channels, since, until, due_step_id)
    times = [clocks.parse(row[0]) for row in rows]
    for channel, moment in planned or []:
        if channel in channels and since <= moment <= until:
            times.append(moment)
    return sorted(times)


# Sends that count towards a cap: outbound, and not failed, refused or skipped.
_COUNTED = "direction = 'outbound' AND status NOT IN ('failed', 'refused', 'skipped')"
# The longest period a rule looks back over (a rolling week), with a margin.
LOOKBACK = timedelta(days=8)


def recent_sends(
    db, contact_ids: list[int], *, clock
) -> dict[int, list[tuple[str, str, int | None]]]:
    """Each contact's counted sends of the last week: ``(channel, at, step)``."""
    ids = sorted(set(contact_ids))
    found: dict[int, list[tuple[str, str, int | None]]] = {cid: [] for cid in ids}
    if not ids:
        return found
    rows = db.execute(
        "SELECT contact_id, channel, at, due_step_id FROM messages "
        f"WHERE contact_id IN ({', '.join('?' for _ in ids)}) AND {_COUNTED} "
        "AND at >= ?",
        [*ids, clocks.iso(clock.now() - LOOKBACK)],
    ).fetchall()
    for contact_id, channel, at, step_id in rows:
        found[contact_id].append((channel, at, step_id))
    return found


def _counted_rows(db, contact_id, channels, since, until, due_step_id):
    marks = ", ".join("?" for _ in channels)
    return db.execute(
        f"""
        SELECT at FROM messages
        WHERE contact_id = ? AND {_COUNTED} AND channel IN ({marks})
          AND at >= ? AND at <= ? AND COALESCE(due_step_id, -1) != ?
        ORDER BY at
        """,
        [
            contact_id,
            *channels,
            clocks.iso(since),
            clocks.iso(until),
            due_step_id or -2,
        ],
    ).fetchall()


def reserve_send_slot(db, key: str, interval_seconds: float, *, clock) -> datetime:
    """Book the next free send slot for a sender; returns when it may send.

    Slots live in the database so several runner processes share one limit.
    """
    now = clock.now()
    with write_transaction(db):
        row = fetch_one(db, "SELECT next_at FROM rate_slots WHERE key = ?", [key])
        slot = now
        if row is not None:
            slot = max(now, clocks.parse(row["next_at"]))
        following = clocks.iso(slot + timedelta(seconds=interval_seconds))
        db.execute(
            "INSERT INTO rate_slots (key, next_at) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET next_at = excluded.next_at",
            [key, following],
        )
    return slot


def rate_limit_for(workspace, channel: str) -> tuple[str, float] | None:
    """``(sender key, seconds between sends)`` for a channel, or None.

    Only real providers are limited; the outbox channel writes files.
    """
    implementation = str(workspace.setting(f"channels.{channel}", "outbox"))
    if implementation == "outbox":
        return None
    default = DEFAULT_RATES_PER_SECOND.get(channel, 0)
    per_second = float(
        workspace.setting(f"rate_limits.{channel}_per_second", default) or 0
    )
    if per_second <= 0:
        return None
    sender = (
        workspace.setting(f"{implementation}.from_number")
        or workspace.setting(f"{implementation}.from_address")
        or implementation
    )
    return f"{channel}:{sender}", 1.0 / per_second
