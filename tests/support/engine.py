"""Helpers for the engine's tests: sequence files, running, reading results."""

from __future__ import annotations

import textwrap
from typing import Any

from cxm_cli.clock import parse
from cxm_cli.events import record_event
from cxm_cli.runner import run_once
from cxm_cli.store import loads, write_transaction


def only_sequences(workspace, **files: str) -> None:
    """Replace the workspace's sequences with ``name=yaml_text`` files."""
    for path in workspace.sequences_dir.glob("*.y*ml"):
        path.unlink()
    for name, text in files.items():
        write_sequence(workspace, name, text)


def write_sequence(workspace, name: str, text: str) -> None:
    path = workspace.sequences_dir / f"{name.replace('_', '-')}.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def midday_zone() -> str:
    """A fixed-offset zone where it is about noon now (real time), so tests with
    the system clock never meet quiet hours, whatever time they run."""
    from datetime import UTC, datetime

    offset = max(-12, min(14, 12 - datetime.now(UTC).hour))
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def emit(db, clock, contact_id: int, event_type: str, **data: Any):
    with write_transaction(db):
        return record_event(db, contact_id, event_type, clock=clock, data=data)


def run(workspace, db, clock, **options):
    return run_once(workspace, db, clock, **options)


def run_until(workspace, db, clock, until: str, *, step_minutes: int = 15):
    """Advance the clock in steps, running the runner at each one."""
    end = parse(until)
    results = []
    while clock.now() < end:
        results.extend(run_once(workspace, db, clock).results)
        clock.advance(minutes=step_minutes)
    results.extend(run_once(workspace, db, clock).results)
    return results


def outbound(db, contact_id: int | None = None) -> list[dict[str, Any]]:
    """Outbound messages (channel, template, at, status), oldest first."""
    sql = "SELECT * FROM messages WHERE direction = 'outbound'"
    params: list[Any] = []
    if contact_id is not None:
        sql += " AND contact_id = ?"
        params.append(contact_id)
    return list(db.query(sql + " ORDER BY id", params))


def timeline(db, contact_id: int, prefix: str = "") -> list[tuple[str, dict]]:
    rows = db.query(
        "SELECT type, data FROM events WHERE contact_id = ? AND type LIKE ? "
        "ORDER BY id",
        [contact_id, prefix + "%"],
    )
    return [(row["type"], loads(row["data"], {})) for row in rows]
