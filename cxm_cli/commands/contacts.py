"""Commands of the contacts group (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    pass
