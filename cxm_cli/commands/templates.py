"""Commands of the templates group (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    pass
