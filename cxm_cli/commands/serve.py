"""``cxm serve``: the web service for webhooks, form events and email links."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cxm_cli.commands._common import say, state


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8025).")] = None,
) -> None:
    """Serve SMS webhooks, POST /events, unsubscribe and tracking links.

    Example: cxm serve --port 8025
    """
    from cxm_cli import server

    s = state(ctx)
    workspace = s.workspace
    bind_host = host or str(workspace.setting("server.host", server.DEFAULT_HOST))
    bind_port = port or int(workspace.setting("server.port", server.DEFAULT_PORT))
    s.db  # noqa: B018  (creates and migrates the database before serving)
    # A server's log is its operator's only view of refused webhooks and bad
    # posts, so warnings show even without --verbose.
    package_logger = logging.getLogger("cxm_cli")
    if package_logger.getEffectiveLevel() > logging.WARNING:
        package_logger.setLevel(logging.WARNING)
    say(f"cxm serving {workspace.business_name} on http://{bind_host}:{bind_port}")
    if bind_host not in ("127.0.0.1", "localhost", "::1"):
        say("  reachable from other machines: put a TLS proxy in front")
    server.serve(workspace, host=bind_host, port=bind_port)
