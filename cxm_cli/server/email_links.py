"""Pages behind the links in outgoing email: unsubscribe, open pixel, clicks.

Unsubscribing follows RFC 8058: a mail client's one-click ``POST`` (body
``List-Unsubscribe=One-Click``) changes consent at once; a ``GET`` (a person
following the link, or a scanner prefetching it) only shows a page with a
confirm button, so nothing changes without a deliberate POST.
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, abort, redirect, render_template_string

from cxm_cli import tokens
from cxm_cli.errors import NotFound
from cxm_cli.events import record_event
from cxm_cli.inbound import opt_out_email
from cxm_cli.server import current_clock, current_db, current_workspace
from cxm_cli.store import fetch_one, write_transaction
from cxm_cli.tracking import CLICK, OPEN, UNSUBSCRIBE

log = logging.getLogger(__name__)

blueprint = Blueprint("email_links", __name__)

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ business }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;
padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}</style>
</head><body>
<h1>{{ business }}</h1>
{% if state == "confirm" %}
<p>Stop receiving emails from {{ business }}{% if address %} at
<strong>{{ address }}</strong>{% endif %}?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>
{% elif state == "done" %}
<p>You are unsubscribed{% if address %} ({{ address }}){% endif %}. You will not
get any more emails from {{ business }}.</p>
{% else %}
<p>This link is not valid any more. If you keep getting emails you did not ask
for, reply to one of them and we will stop.</p>
{% endif %}
</body></html>
"""


def _page(state: str, address: str | None = None, status: int = 200) -> Response:
    body = render_template_string(
        _PAGE,
        business=current_workspace().business_name,
        state=state,
        address=_masked(address),
    )
    return Response(body, status=status, mimetype="text/html")


def _masked(address: str | None) -> str | None:
    """m***@example.com: enough to recognise, not enough to harvest."""
    if not address or "@" not in address:
        return None
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _unsubscribe_claim(token: str) -> dict | None:
    try:
        payload = tokens.verify(current_workspace(), UNSUBSCRIBE, token)
    except tokens.TokenInvalid:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), int):
        return None
    contact = fetch_one(
        current_db(), "SELECT id, email FROM contacts WHERE id = ?", [payload["c"]]
    )
    if contact is None:
        return None
    return {"contact": contact, "message_id": payload.get("m")}


@blueprint.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    claim = _unsubscribe_claim(token)
    if claim is None:
        return _page("invalid", status=404)
    return _page("confirm", claim["contact"]["email"])


@blueprint.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    claim = _unsubscribe_claim(token)
    if claim is None:
        return _page("invalid", status=404)
    contact = claim["contact"]
    opt_out_email(
        current_db(),
        current_clock(),
        contact["id"],
        source="email_unsubscribe",
        detail={"message_id": claim["message_id"]},
    )
    log.info("contact %s unsubscribed from email", contact["id"])
    return _page("done", contact["email"])


def _record_for_message(message_id, event_type: str, data: dict) -> None:
    db = current_db()
    with write_transaction(db):
        message = fetch_one(
            db, "SELECT id, contact_id FROM messages WHERE id = ?", [message_id]
        )
        if message is None:
            raise NotFound(f"message {message_id} is gone")
        record_event(
            db,
            message["contact_id"],
            event_type,
            clock=current_clock(),
            data={"message_id": message["id"], **data},
            source="tracking",
        )


@blueprint.get("/o/<token>.gif")
def open_pixel(token: str):
    try:
        payload = tokens.verify(current_workspace(), OPEN, token)
        _record_for_message(payload.get("m"), "email.opened", {"channel": "email"})
    except (tokens.TokenInvalid, NotFound, AttributeError):
        # A broken pixel must still be an image, or the email shows a hole.
        log.debug("open pixel with an unusable token")
    response = Response(PIXEL, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store, max-age=0"
    return response


@blueprint.get("/c/<token>")
def click(token: str):
    try:
        payload = tokens.verify(current_workspace(), CLICK, token)
    except tokens.TokenInvalid:
        abort(404)
    target = payload.get("u") if isinstance(payload, dict) else None
    if not isinstance(target, str) or not target.startswith(("http://", "https://")):
        abort(404)
    try:
        _record_for_message(
            payload.get("m"), "email.clicked", {"channel": "email", "url": target}
        )
    except NotFound:
        log.debug("click on a link of a message that is gone")
    return redirect(target, code=302)
