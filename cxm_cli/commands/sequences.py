"""``cxm sequences ...``: list the workspace's sequences and check their files."""

from __future__ import annotations

from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn

sequences_app = typer.Typer(
    help="List sequences and check sequence files.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(sequences_app, name="sequences")


@sequences_app.command("list")
def list_command(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False):
    """List the sequences: trigger, steps, group, and contacts in each now.

    Example: cxm sequences list
    """
    from cxm_cli.sequence_report import sequence_rows

    app_state = state(ctx)
    rows = sequence_rows(app_state.workspace, app_state.db)
    if as_json:
        print_json(rows)
        return
    emit(
        rows,
        as_json=False,
        columns=["name", "file", "trigger", "steps", "group", "active", "status"],
    )


@sequences_app.command("validate")
def validate_command(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False):
    """Check every sequence file; print each problem with file and line.

    Exits 1 when any file has a problem.
    Example: cxm sequences validate
    """
    from cxm_cli.sequences import load_sequences, tasks_without_staff

    app_state = state(ctx)
    result = load_sequences(app_state.workspace)
    unsent_tasks = tasks_without_staff(app_state.workspace, result)
    if as_json:
        print_json(
            {
                "ok": not result.problems,
                "sequences": sorted(result.sequences),
                "problems": [problem.as_dict() for problem in result.problems],
                "tasks_without_staff": unsent_tasks,
            }
        )
    else:
        folder = app_state.workspace.sequences_dir
        for problem in result.problems:
            typer.echo(
                f"{folder / problem.file}:{problem.line or 1}: {problem.message}"
            )
        if result.problems:
            say(
                f"{len(result.problems)} problem(s) in "
                f"{len(result.invalid)} file(s); those sequences enrol nobody until "
                "fixed"
            )
        else:
            say(f"{len(result.sequences)} sequence(s), no problems")
    if unsent_tasks:
        # A warning, not a problem: the sequences still run, but their staff
        # tasks will fail until someone is there to receive them.
        warn(
            f"{', '.join(unsent_tasks)} tell staff by email, but [staff] email "
            "is not set in cxm.toml: those steps will fail"
        )
    if result.problems:
        raise typer.Exit(1)
