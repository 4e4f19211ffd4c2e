"""``cxm timeline CONTACT``: everything that happened to one person."""

from __future__ import annotations

from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, say, state


def register(app: typer.Typer) -> None:
    app.command("timeline")(timeline)


def timeline(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    since: Annotated[
        str | None,
        typer.Option(help="Only from then on: 7d, 2026-03-01 or an ISO time."),
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Only this channel (sms, email, ...).")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show a contact's timeline, oldest first.

    Example: cxm timeline maria@example.com --since 7d
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.timeline import build_timeline, local_time, parse_since

    s = state(ctx)
    person = resolve_contact(s.workspace, s.db, contact)
    since_at = (
        parse_since(since, s.clock, timezone=s.workspace.timezone) if since else None
    )
    story = build_timeline(s.db, person["id"], since=since_at, channel=channel)
    if as_json:
        emit(story, as_json=True)
        return

    info = story["contact"]
    origin = story["origin"]
    found = origin["source"] or "unknown source"
    say(
        f"{info['name']} (#{info['id']}) - came from {found}, first seen "
        f"{local_time(origin['first_at'], s.workspace.timezone)}"
    )
    labels = thread_labels(story["entries"])
    rows = [
        {
            "when": local_time(entry["at"], s.workspace.timezone),
            "what": entry["type"],
            "channel": entry["channel"] or "",
            "thread": labels.get(entry["thread"], ""),
            "detail": entry["summary"],
            "status": entry["status"] or "",
        }
        for entry in story["entries"]
    ]
    emit(
        rows,
        as_json=False,
        columns=["when", "what", "channel", "thread", "detail", "status"],
    )


def thread_labels(entries) -> dict[str, str]:
    """Short names for conversation threads (#1, #2, ...) in order of appearance."""
    labels: dict[str, str] = {}
    for entry in entries:
        thread = entry.get("thread")
        if thread and thread not in labels:
            labels[thread] = f"#{len(labels) + 1}"
    return labels
