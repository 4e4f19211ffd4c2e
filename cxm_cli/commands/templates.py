"""``cxm templates ...``: list message templates and preview them for a contact."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn
from cxm_cli.errors import InputError

templates_app = typer.Typer(
    help="List message templates and preview them for a contact.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def list_command(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False):
    """List the message templates: shipped defaults and the workspace's own.

    Example: cxm templates list --json
    """
    from cxm_cli.rendering import list_templates

    infos = list_templates(state(ctx).workspace)
    if as_json:
        print_json([info.as_dict() for info in infos])
        return
    rows = [
        {
            "name": info.name,
            "channels": info.channels,
            "source": info.source,
            "subject": info.error and f"BROKEN: {info.error}" or info.subject,
            "description": info.description,
        }
        for info in infos
    ]
    emit(
        rows,
        as_json=False,
        columns=["name", "channels", "source", "subject", "description"],
    )


@templates_app.command("render")
def render_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Template name.")],
    contact: Annotated[
        str, typer.Option("--contact", "-c", help="Contact id, email or phone.")
    ],
    channel: Annotated[
        str | None,
        typer.Option(help="email or sms (default: the template's first channel)."),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help="Extra variable KEY=VALUE (repeatable)."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
):
    """Show exactly what a template would send to one contact.

    Example: cxm templates render new-lead-text --contact ana@example.com
    """
    from cxm_cli.messaging import preview_message

    app_state = state(ctx)
    preview = preview_message(
        app_state.workspace,
        app_state.db,
        name,
        contact,
        channel=channel,
        extra=_parse_data(data or []),
    )
    if as_json:
        print_json(preview)
        return

    out = sys.stdout
    out.write(f"To: {preview['to'] or '(none)'}\n")
    if preview["subject"] is not None:
        out.write(f"Subject: {preview['subject']}\n")
    if preview["sms"] is not None:
        sms = preview["sms"]
        noun = "segment" if sms["segments"] == 1 else "segments"
        out.write(
            f"Encoding: {sms['encoding']}, {sms['characters']} characters, "
            f"{sms['segments']} {noun}\n"
        )
    out.write("\n" + preview["body"] + "\n")
    if preview["html_body"]:
        say("(this email also has an HTML part; see --json)")
    for warning in preview["warnings"]:
        warn(warning)


@templates_app.command("copy")
def copy_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Shipped template to copy.")],
):
    """Copy a shipped template into the workspace's templates/ to edit it.

    Example: cxm templates copy new-lead-text
    """
    from cxm_cli.rendering import copy_template

    path = copy_template(state(ctx).workspace, name)
    say(f"copied to {path}; edit it there, it now overrides the shipped one")
    sys.stdout.write(f"{path}\n")


def _parse_data(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--data {pair!r} is not KEY=VALUE")
        values[key.strip()] = value
    return values
