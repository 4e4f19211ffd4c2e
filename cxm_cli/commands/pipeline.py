"""``cxm pipeline ...``: moving contacts, the board, stale contacts and values."""

from __future__ import annotations

from typing import Annotated

import typer

from cxm_cli.board import build_board, render_board, stale_contacts, values_report
from cxm_cli.commands._common import (
    JSON_OPTION,
    emit,
    print_json,
    print_rows,
    say,
    state,
    stdout_console,
    warn,
)
from cxm_cli.contacts import find_contact
from cxm_cli.pipelines import move_contact, pipeline_config

pipeline_app = typer.Typer(
    help="Pipelines: move contacts between stages, see the board, stale contacts "
    "and values.",
    no_args_is_help=True,
)

PIPELINE_OPTION = typer.Option(
    "--pipeline", "-p", help="Pipeline name (default: the first in cxm.toml)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")


def _warn_about_config(workspace) -> None:
    for problem in pipeline_config(workspace).problems:
        warn(str(problem))


@pipeline_app.command("move")
def move(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    stage: Annotated[str, typer.Argument(help="Stage to move to.")],
    pipeline: Annotated[str | None, PIPELINE_OPTION] = None,
    value: Annotated[
        float | None, typer.Option("--value", help="Deal value (amount).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Why, in words.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Move a contact to a pipeline stage, with an optional deal value and note.

    Example: cxm pipeline move jane@example.com "consult booked" --value 1200
    """
    st = state(ctx)
    _warn_about_config(st.workspace)
    person = find_contact(st.db, contact, region=st.workspace.phone_region)
    result = move_contact(
        st.db,
        st.workspace,
        st.clock,
        person["id"],
        stage,
        pipeline=pipeline,
        value=value,
        note=note,
        by="cli",
        reason=note or "moved by hand",
    )

    if as_json:
        print_json(
            {
                "contact_id": result.contact_id,
                "pipeline": result.pipeline,
                "from": result.from_stage,
                "to": result.to_stage,
                "changed": result.changed,
                "value": result.value,
                "at": result.at,
                "event_id": result.event_id,
            }
        )
    elif result.changed:
        source = result.from_stage or "(no stage)"
        say(
            f"contact {result.contact_id}: {source} -> {result.to_stage} "
            f"in {result.pipeline}"
        )
    else:
        say(f"contact {result.contact_id} is already in {result.to_stage}")


@pipeline_app.command("board")
def board(
    ctx: typer.Context,
    pipeline: Annotated[str | None, PIPELINE_OPTION] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Contacts shown per stage (default 8; with --json, everyone). "
            "0 shows everyone.",
        ),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Draw the pipeline's stages side by side with counts, values and ages.

    Example: cxm pipeline board --pipeline sales
    """
    st = state(ctx)
    _warn_about_config(st.workspace)
    if limit is None:
        limit = 0 if as_json else 8
    result = build_board(
        st.db, st.workspace, st.clock, pipeline=pipeline, limit=limit or None
    )
    if as_json:
        print_json(result.to_dict())
        return
    console = stdout_console()
    console.print(render_board(result, console.width))


@pipeline_app.command("stale")
def stale(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            help="In the stage at least this many days (default: each stage's "
            "stale_after_days).",
        ),
    ] = None,
    pipeline: Annotated[str | None, PIPELINE_OPTION] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List contacts who have sat in an open stage too long, longest first.

    Example: cxm pipeline stale --days 14
    """
    st = state(ctx)
    _warn_about_config(st.workspace)
    rows = stale_contacts(st.db, st.workspace, st.clock, days=days, pipeline=pipeline)
    emit(
        rows,
        as_json=as_json,
        columns=["contact_id", "name", "stage", "days_in_stage", "value"],
        headers=["id", "name", "stage", "days", "value"],
    )


@pipeline_app.command("list")
def list_pipelines(
    ctx: typer.Context,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the pipelines, their stages and the automatic rules from cxm.toml.

    Example: cxm pipeline list
    """
    st = state(ctx)
    config = pipeline_config(st.workspace)
    stages = [
        {
            "pipeline": pipeline.name,
            "default": pipeline.name == config.default_name,
            "position": stage.position + 1,
            "stage": stage.name,
            "kind": stage.kind,
            "stale_after_days": pipeline.stale_days_for(stage),
        }
        for pipeline in config.pipelines.values()
        for stage in pipeline.stages
    ]
    rules = [
        {
            "rule": rule.number,
            "pipeline": rule.pipeline,
            "on": rule.on if rule.days is None else f"{rule.on} {rule.days}d",
            "from": rule.from_stages or "any",
            "to": rule.to,
            "backwards": rule.backwards,
            "where": rule.where,
        }
        for rule in config.rules
    ]

    if as_json:
        print_json(
            {
                "stages": stages,
                "rules": rules,
                "problems": [str(problem) for problem in config.problems],
            }
        )
        return
    for problem in config.problems:
        warn(str(problem))
    print_rows(
        stages,
        ["pipeline", "position", "stage", "kind", "stale_after_days"],
        title="stages",
        headers=["pipeline", "#", "stage", "kind", "stale after (days)"],
    )
    print_rows(
        rules, ["rule", "pipeline", "on", "from", "to", "backwards"], title="rules"
    )


@pipeline_app.command("values")
def values(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", help="Group by stage, source or contact.")
    ] = "stage",
    pipeline: Annotated[str | None, PIPELINE_OPTION] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many rows.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show deal value and lifetime value (paid invoices) per stage, source or contact.

    Example: cxm pipeline values --by source
    """
    st = state(ctx)
    _warn_about_config(st.workspace)
    rows = values_report(st.db, st.workspace, by=by, pipeline=pipeline, limit=limit)
    if by == "contact":
        columns = ["contact_id", "name", "stage", "deal_value", "lifetime_value"]
    else:
        columns = [by, "contacts", "deal_value", "lifetime_value", "paying_contacts"]
    emit(rows, as_json=as_json, columns=columns)
