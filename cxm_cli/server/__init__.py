"""``cxm serve``: the small web service that lets the world reach cxm.

A Flask app served by waitress, bound to loopback unless told otherwise. Each
part of cxm that needs URLs contributes a Flask blueprint in its own module,
listed in :data:`BLUEPRINT_MODULES`; a module that is not installed is simply
left out. Blueprint code reaches the workspace, a database connection for the
current request and the clock through :func:`current_workspace`,
:func:`current_db` and :func:`current_clock`.

Put a TLS-terminating reverse proxy in front for the internet and set
``[server] public_url`` to the address people and providers use: signatures
(Twilio) and links in emails are computed from it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass

from flask import Flask, current_app, g, jsonify

from cxm_cli.clock import SystemClock
from cxm_cli.tracking import public_url

__all__ = [
    "BLUEPRINT_MODULES",
    "create_app",
    "current_clock",
    "current_db",
    "current_workspace",
    "public_url",
    "serve",
    "serve_in_thread",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
# Webhooks and form posts are small; refuse anything bigger before parsing it.
MAX_REQUEST_BYTES = 256 * 1024

BLUEPRINT_MODULES = [
    "cxm_cli.server.twilio_hooks",
    "cxm_cli.server.events_api",
    "cxm_cli.server.email_links",
    "cxm_cli.server.review_pages",
]


def create_app(workspace, clock=None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["CXM_WORKSPACE"] = workspace
    app.config["CXM_CLOCK"] = clock or SystemClock()
    app.teardown_appcontext(_close_db)

    for name in BLUEPRINT_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("web module %s not present", name)
            continue
        app.register_blueprint(module.blueprint)

    @app.get("/health")
    def health():
        return jsonify({"ok": True, "business": workspace.business_name})

    return app


def current_workspace():
    return current_app.config["CXM_WORKSPACE"]


def current_clock():
    return current_app.config["CXM_CLOCK"]


def current_db():
    """A database connection for this request, closed when it ends."""
    if "cxm_db" not in g:
        g.cxm_db = current_workspace().open_db()
    return g.cxm_db


def _close_db(_error=None) -> None:
    db = g.pop("cxm_db", None)
    if db is not None:
        db.close()


def serve(workspace, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve until interrupted (``cxm serve``).

    Built from waitress's ``create_server`` rather than its ``serve``, which
    calls ``logging.basicConfig()``: that root handler would print every cxm
    log line a second time next to the ``cxm_cli`` logger's own handler.
    """
    from waitress import create_server

    share_log_handlers("waitress")
    server = create_server(create_app(workspace), host=host, port=port, threads=4)
    log.info("serving on %s:%s", host, server.effective_port)
    server.run()


def share_log_handlers(name: str) -> None:
    """Send a library's log lines through the ``cxm_cli`` logger's handlers.

    Each line is then printed once, in cxm's format, whether or not anything
    configured the root logger.
    """
    package = logging.getLogger("cxm_cli")
    library = logging.getLogger(name)
    if library.handlers or not package.handlers:
        return
    for handler in package.handlers:
        library.addHandler(handler)
    library.propagate = False


@dataclass
class ServerHandle:
    """A server running in a background thread; ``stop()`` ends it."""

    host: str
    port: int
    _server: object
    _thread: threading.Thread
    _stopping: threading.Event

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._server.pull_trigger()
        self._thread.join(timeout)


def serve_in_thread(
    workspace, host: str = DEFAULT_HOST, port: int = 0, clock=None
) -> ServerHandle:
    """Start serving in a daemon thread; port 0 picks a free port.

    Used by ``cxm run --serve`` and by tests, which need to stop the server
    again without ending the process.
    """
    from waitress import create_server, wasyncore

    server = create_server(
        create_app(workspace, clock), host=host, port=port, threads=4
    )
    stopping = threading.Event()

    def loop() -> None:
        try:
            while not stopping.is_set():
                wasyncore.loop(timeout=0.5, map=server._map, use_poll=True, count=1)
        finally:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(server._map)

    thread = threading.Thread(target=loop, name="cxm-serve", daemon=True)
    thread.start()
    handle = ServerHandle(host, int(server.effective_port), server, thread, stopping)
    log.info("serving on %s in a thread", handle.url)
    return handle
