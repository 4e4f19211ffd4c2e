"""``cxm inbox``: who is waiting for an answer; ``cxm reply``: answer them."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, say, state, warn
from cxm_cli.errors import InputError

# The group's help is the callback's docstring (it lists when no subcommand).
inbox_app = typer.Typer(invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.add_typer(inbox_app, name="inbox")
    app.command("reply")(reply)


@inbox_app.callback()
def inbox(
    ctx: typer.Context,
    channel: Annotated[
        str | None, typer.Option(help="Only conversations on this channel.")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only people waiting longer (2h, 1d)."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List open conversations, the longest-waiting first.

    Example: cxm inbox --channel sms --older-than 2h
    """
    if ctx.invoked_subcommand is not None:
        return
    from cxm_cli.inbox import open_conversations
    from cxm_cli.timeline import parse_duration

    s = state(ctx)
    age = parse_duration(older_than) if older_than else None
    rows = open_conversations(s.db, s.clock, channel=channel, older_than=age)
    if not rows and not as_json:
        say("nobody is waiting for an answer")
        return
    emit(
        rows,
        as_json=as_json,
        columns=[
            "contact_id",
            "name",
            "channel",
            "waiting",
            "unanswered",
            "last_words",
            "flag",
        ],
        headers=[
            "id",
            "name",
            "channel",
            "waiting",
            "unanswered",
            "last words",
            "flag",
        ],
    )


@inbox_app.command("record")
def record(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Argument(help="'-' to read JSON (one object or a list) from stdin."),
    ] = None,
    contact: Annotated[
        str | None, typer.Option(help="Contact id, email or phone.")
    ] = None,
    channel: Annotated[str, typer.Option(help="sms, email, chat, call, ...")] = "sms",
    text: Annotated[str | None, typer.Option(help="What the person wrote.")] = None,
    subject: Annotated[str | None, typer.Option(help="Email subject.")] = None,
    at: Annotated[
        str | None, typer.Option(help="When it arrived (ISO time); default now.")
    ] = None,
    provider_id: Annotated[
        str | None,
        typer.Option("--provider-id", help="Provider's id; a repeat records nothing."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Record a message a person sent (stops sequences that exit on replies).

    Example: cxm inbox record --contact 12 --channel sms --text "Yes, Tuesday works"
    """
    from cxm_cli.inbox import record_inbound_items

    s = state(ctx)
    if file is not None:
        if file != "-":
            raise InputError("record reads JSON only from stdin: pass '-'")
        items = _read_stdin_json()
    else:
        if not contact or text is None:
            raise InputError("give --contact and --text, or '-' with JSON on stdin")
        items = [
            {
                "contact": contact,
                "channel": channel,
                "text": text,
                "subject": subject,
                "at": at,
                "provider_id": provider_id,
            }
        ]

    recorded = record_inbound_items(
        s.workspace, s.db, s.clock, items, from_options=file is None
    )
    results = [result.as_dict() for result in recorded]
    if not as_json:
        for result in recorded:
            what = "already recorded" if result.duplicate else "recorded"
            say(f"{what} message {result.message_id} for contact {result.contact_id}")
            for action in result.actions:
                say(f"  {action}")

    if as_json:
        emit(results if file == "-" else results[0], as_json=True)


def _read_stdin_json() -> list[Any]:
    try:
        data = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        raise InputError(f"stdin: not JSON ({exc.msg} at line {exc.lineno})") from exc
    return data if isinstance(data, list) else [data]


@inbox_app.command("done")
def done(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
) -> None:
    """Mark a conversation handled without replying (answered by phone, say).

    Example: cxm inbox done 12
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.inbox import close_conversation

    s = state(ctx)
    person = resolve_contact(s.workspace, s.db, contact)
    closed = close_conversation(s.db, s.clock, person["id"])
    if not closed:
        warn(f"contact {person['id']} had no open conversation")
        return
    say(f"closed {closed} waiting message(s) of contact {person['id']}")


@inbox_app.command("poll")
def poll(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Fetch new email replies from the IMAP mailbox once.

    Example: cxm inbox poll
    """
    from cxm_cli.imap import poll_mailbox

    s = state(ctx)
    result = poll_mailbox(s.workspace, s.db, s.clock)
    emit(result.as_dict(), as_json=as_json)


def reply(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    text: Annotated[str | None, typer.Option(help="What to say.")] = None,
    template: Annotated[str | None, typer.Option(help="A message template.")] = None,
    snippet: Annotated[
        str | None, typer.Option(help="A saved answer from snippets.toml.")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Default: the channel they last used.")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Email subject.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Answer a person on the channel they last used.

    Example: cxm reply 12 --text "Tuesday at 3pm works, see you then!"
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.reply import send_reply

    s = state(ctx)
    person = resolve_contact(s.workspace, s.db, contact)
    sent = send_reply(
        s.workspace,
        s.db,
        s.clock,
        person,
        text=text,
        template=template,
        snippet=snippet,
        channel=channel,
        subject=subject,
    )
    summary = _sent_summary(sent, person["id"])
    if as_json:
        emit(summary, as_json=True)
        return
    say(f"sent {summary.get('channel') or ''} reply to contact {person['id']}".strip())


def _sent_summary(sent: Any, contact_id: int) -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "message_id": getattr(sent, "message_id", None),
        "channel": getattr(sent, "channel", None),
        "address": getattr(sent, "address", None),
        "status": getattr(sent, "status", None),
        "provider_id": getattr(sent, "provider_id", None),
    }
