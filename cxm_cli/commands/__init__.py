"""Command groups. Each module has ``register(app)`` adding its commands."""

from cxm_cli.commands import (
    audit,
    contacts,
    contacts_list,
    events,
    inbox,
    init,
    leads,
    pipeline,
    privacy,
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
    contacts_list,
    privacy,
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
