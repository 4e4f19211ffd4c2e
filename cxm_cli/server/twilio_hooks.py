"""The SMS provider's webhooks: inbound texts and delivery-status callbacks.

Point the phone number's "A message comes in" webhook at
``<public_url>/twilio/sms`` and the status callback at
``<public_url>/twilio/status``. Every request must carry a valid
``X-Twilio-Signature``: HMAC-SHA1, keyed with the account's auth token, over
the full request URL followed by each POST parameter's name and value sorted
by name, base64-encoded. A request that fails the check gets 403 and nothing
is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Response, abort, request

from cxm_cli.inbound import record_inbound, record_status
from cxm_cli.server import current_clock, current_db, current_workspace, public_url

log = logging.getLogger(__name__)

blueprint = Blueprint("twilio", __name__, url_prefix="/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
DEFAULT_AUTH_TOKEN_ENV = "CXM_SMS_AUTH_TOKEN"


def compute_signature(auth_token: str, url: str, params: dict[str, list[str]]) -> str:
    """The signature Twilio sends for a form POST to ``url`` with ``params``."""
    payload = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            payload += name + value
    digest = hmac.new(
        auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as signed may or may not name the scheme's default port."""
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url]
    if parts.port is not None and parts.port == default_port:
        variants.append(urlunsplit(parts._replace(netloc=parts.hostname or "")))
    elif parts.port is None and default_port is not None:
        netloc = f"{parts.hostname}:{default_port}"
        variants.append(urlunsplit(parts._replace(netloc=netloc)))
    return variants


def signed_url() -> str:
    """The URL the provider called: the public address when one is set."""
    base = public_url(current_workspace())
    if base:
        query = request.query_string.decode("latin-1")
        return base + request.path + (f"?{query}" if query else "")
    return request.url


def _auth_token() -> str | None:
    workspace = current_workspace()
    variable = workspace.setting("twilio.auth_token_env", DEFAULT_AUTH_TOKEN_ENV)
    return workspace.secret(variable)


def require_valid_signature() -> None:
    token = _auth_token()
    if not token:
        # Without a token nothing can be verified, so nothing is accepted.
        log.warning("SMS webhook refused: no auth token configured")
        abort(403)
    given = request.headers.get("X-Twilio-Signature", "")
    # Limitation: only form-encoded webhooks are checked; Twilio's JSON-bodied
    # requests (signed with a bodySHA256 query parameter) are refused.
    params = request.form.to_dict(flat=False)
    for url in _url_variants(signed_url()):
        expected = compute_signature(token, url, params)
        if hmac.compare_digest(expected.encode(), given.encode()):
            return
    log.warning("SMS webhook refused: bad signature from %s", request.remote_addr)
    abort(403)


@blueprint.post("/sms")
def inbound_sms():
    require_valid_signature()
    form = request.form
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    sender = form.get("From")
    if not message_sid or not sender:
        abort(400, "MessageSid and From are required")

    # Limitation: for picture messages only the count is kept, not MediaUrlN.
    media = int(form.get("NumMedia") or 0)
    result = record_inbound(
        current_workspace(),
        current_db(),
        current_clock(),
        channel="sms",
        text=form.get("Body", ""),
        address=sender,
        provider_id=message_sid,
        source="twilio",
        create_contact=True,
        data={"media": media} if media else None,
    )
    log.info(
        "inbound sms %s contact=%s duplicate=%s",
        result.message_id,
        result.contact_id,
        result.duplicate,
    )
    return Response(EMPTY_TWIML, mimetype="text/xml")


@blueprint.post("/status")
def delivery_status():
    require_valid_signature()
    form = request.form
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not message_sid or not status:
        abort(400, "MessageSid and MessageStatus are required")
    outcome = record_status(
        current_db(),
        current_clock(),
        channel="sms",
        provider_id=message_sid,
        status=status,
        error_code=form.get("ErrorCode") or None,
        source="twilio",
    )
    log.info("status callback %s: %s", message_sid, outcome["outcome"])
    return Response(status=204)
