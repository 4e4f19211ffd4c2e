"""``cxm events ...``: record events from scripts, cron and web forms."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn

events_app = typer.Typer(
    help="Record events (bookings, payments, forms) and list the known types.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")


@events_app.command("emit")
def emit_command(
    ctx: typer.Context,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="Event type (appointment.booked, ...), or - for JSONL."
        ),
    ],
    contact: Annotated[
        str | None, typer.Option("--contact", "-c", help="Contact id, email or phone.")
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help="Event data KEY=VALUE (repeatable)."),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Find, or create, the contact by email.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option(help="Find, or create, the contact by phone.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name for a new contact.")] = None,
    at: Annotated[
        str | None, typer.Option(help="When it happened (ISO 8601; default now).")
    ] = None,
    source: Annotated[str, typer.Option(help="What recorded it.")] = "cli",
    as_json: Annotated[bool, JSON_OPTION] = False,
):
    """Record an event for a contact; `-` reads JSON Lines from stdin.

    Example: cxm events emit appointment.booked -c 12 -d starts_at=2026-03-05T15:00Z
    """
    from cxm_cli.event_intake import emit_event, emit_lines, parse_data_options

    app_state = state(ctx)
    workspace, db, clock = app_state.workspace, app_state.db, app_state.clock
    if event_type == "-":
        results, problems = emit_lines(workspace, db, clock, sys.stdin, source=source)
        rows = [result.as_dict() for result in results]
        emit(
            rows,
            as_json=as_json,
            columns=["event_id", "contact_id", "type", "created_contact"],
        )
        for result in results:
            for text in result.warnings:
                warn(text)
        for problem in problems:
            warn(problem)
        say(f"{len(results)} event(s) recorded, {len(problems)} line(s) refused")
        if problems:
            raise typer.Exit(1)
        return

    result = emit_event(
        workspace,
        db,
        clock,
        event_type,
        contact=contact,
        email=email,
        phone=phone,
        name=name,
        data=parse_data_options(data),
        at=at,
        source=source,
    )
    for text in result.warnings:
        warn(text)
    if as_json:
        print_json(result.as_dict())
        return
    created = " (new contact)" if result.created_contact else ""
    say(f"recorded {result.type} for contact {result.contact_id}{created}")


@events_app.command("types")
def types_command(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False):
    """List the documented event types (custom types are allowed too).

    Example: cxm events types
    """
    from cxm_cli.events import KNOWN_TYPES

    rows = [
        {"type": name, "meaning": text} for name, text in sorted(KNOWN_TYPES.items())
    ]
    emit(rows, as_json=as_json, columns=["type", "meaning"])
