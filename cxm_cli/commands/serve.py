"""Commands of the serve group (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    pass
