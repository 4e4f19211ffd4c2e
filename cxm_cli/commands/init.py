"""``cxm init``: create a workspace."""

from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, say
from cxm_cli.workspace import business_name_from_folder, init_workspace


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create.")] = Path("."),
    name: Annotated[
        str | None,
        typer.Option(help="Business name (default: from the folder's name)."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "America/Chicago",
    region: Annotated[str, typer.Option(help="Default phone region.")] = "US",
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Create a workspace: cxm.toml, .env.example, sequences/ and data/.

    Example: cxm init ~/clients/bright-smile --name "Bright Smile Dental"
    """
    business_name = name or business_name_from_folder(directory)
    result = init_workspace(
        directory, business_name=business_name, timezone=timezone, phone_region=region
    )
    if as_json:
        emit({"workspace": str(result.root), "created": result.created}, as_json=True)
        return
    say(f"created workspace {result.root} for {business_name!r}")
    if name is None:
        say("  (business name taken from the folder; change it in cxm.toml)")
    for item in result.created:
        say(f"  {item}")
