"""Commands of the leads group (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    pass
