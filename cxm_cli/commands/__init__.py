"""Command groups. Each module has ``register(app)`` adding its commands."""

from cxm_cli.commands import (
    audit,
    contacts,
    events,
    inbox,
    init,
    leads,
    pipeline,
    reviews,
    run,
    sequences,
    serve,
    templates,
    timeline,
)

COMMAND_MODULES = [
    init,
    leads,
    contacts,
    sequences,
    templates,
    events,
    run,
    inbox,
    timeline,
    serve,
    pipeline,
    reviews,
    audit,
]
