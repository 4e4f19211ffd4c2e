"""``cxm init``: create a workspace."""

from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, say
from cxm_cli.workspace import init_workspace


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create.")] = Path("."),
    name: Annotated[str, typer.Option(help="Business name.")] = "Our business",
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "America/Chicago",
    region: Annotated[str, typer.Option(help="Default phone region.")] = "US",
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Create a workspace: cxm.toml, .env.example, sequences/ and data/.

    Example: cxm init ~/clients/bright-smile --name "Bright Smile Dental"
    """
    result = init_workspace(
        directory, business_name=name, timezone=timezone, phone_region=region
    )
    if as_json:
        emit({"workspace": str(result.root), "created": result.created}, as_json=True)
        return
    say(f"created workspace {result.root}")
    for item in result.created:
        say(f"  {item}")
