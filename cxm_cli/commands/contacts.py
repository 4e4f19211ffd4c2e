"""``cxm contacts ...``: looking at, merging, exporting and erasing people.

Other command modules add their own ``contacts`` commands to ``contacts_app``.
"""

import typer

contacts_app = typer.Typer(
    help="Look at, merge, export and erase contacts.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
