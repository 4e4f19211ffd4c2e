"""Commands of the pipeline group (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    pass
