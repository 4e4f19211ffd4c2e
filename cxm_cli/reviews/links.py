"""Signed links into the rating page, and the staff link to a contact's timeline.

A link carries a token signed with the workspace's secret (``cxm_cli.tokens``)
naming the request and a one-time nonce. The signature stops forgery, the
expiry limits how long a link lives, and the nonce's row in
``review_token_uses`` makes each link work once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

from cxm_cli import tokens
from cxm_cli.errors import CxmError
from cxm_cli.tracking import public_url

RATE = "review-rate"
FEEDBACK = "review-feedback"
STAFF_TIMELINE = "review-staff-timeline"
STAFF_LINK_DAYS = 30
URL_PREFIX = "/reviews"


class LinkRefused(CxmError):
    """A review link is forged, altered, expired or already used."""


@dataclass(frozen=True)
class LinkClaim:
    request_id: int
    nonce: str


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def base_url(workspace) -> str | None:
    """Where ``cxm serve`` is reachable by customers (``[server] public_url``).

    None when it is not set: the rating page cannot be reached then, so
    messages carry the public links and "reply 1 to 5" without a page link.
    """
    return public_url(workspace)


def sign_claim(workspace, purpose: str, request_id: int, nonce: str) -> str:
    return tokens.sign(workspace, purpose, {"r": request_id, "n": nonce})


# Limitation: expiry is checked against the system clock (itsdangerous's
# timestamps), not the injected clock, so simulations cannot age a link.
def read_claim(
    workspace, purpose: str, token: str, *, max_age_days: float
) -> LinkClaim:
    """The request a token names, or :class:`LinkRefused` saying why not."""
    try:
        payload = tokens.verify(
            workspace, purpose, token, max_age_seconds=max_age_days * 86400
        )
    except tokens.TokenInvalid as exc:
        raise LinkRefused(str(exc)) from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("r"), int)
        or not isinstance(payload.get("n"), str)
    ):
        raise LinkRefused("the link does not name a review request")
    return LinkClaim(request_id=payload["r"], nonce=payload["n"])


def rating_path(workspace, request_id: int, nonce: str) -> str:
    token = sign_claim(workspace, RATE, request_id, nonce)
    return f"{URL_PREFIX}/rate/{quote(token)}"


def feedback_path(workspace, request_id: int, nonce: str) -> str:
    token = sign_claim(workspace, FEEDBACK, request_id, feedback_nonce(nonce))
    return f"{URL_PREFIX}/feedback/{quote(token)}"


def rating_url(
    workspace, request_id: int, nonce: str, score: int | None = None
) -> str | None:
    base = base_url(workspace)
    if not base:
        return None
    url = base + rating_path(workspace, request_id, nonce)
    return f"{url}?score={score}" if score else url


def feedback_url(workspace, request_id: int, nonce: str) -> str | None:
    base = base_url(workspace)
    return base + feedback_path(workspace, request_id, nonce) if base else None


def feedback_nonce(nonce: str) -> str:
    """The feedback link's nonce, derived so it needs no column of its own."""
    return f"{nonce}.feedback"


def staff_timeline_url(
    workspace, contact_id: int, timeline_template: str | None
) -> str | None:
    """The link staff follow from an alert to the person's timeline.

    A CRM of the business's own may be named in ``reviews.timeline_url``
    (``https://crm.example.com/people/{contact_id}``); otherwise it is cxm's
    read-only timeline page behind a signed, expiring link.
    """
    if timeline_template:
        return timeline_template.replace("{contact_id}", str(contact_id))
    base = base_url(workspace)
    if not base:
        return None
    token = tokens.sign(workspace, STAFF_TIMELINE, {"c": contact_id})
    return f"{base}{URL_PREFIX}/staff/timeline/{quote(token)}"


def read_staff_timeline(workspace, token: str) -> int:
    try:
        payload = tokens.verify(
            workspace, STAFF_TIMELINE, token, max_age_seconds=STAFF_LINK_DAYS * 86400
        )
    except tokens.TokenInvalid as exc:
        raise LinkRefused(str(exc)) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), int):
        raise LinkRefused("the link does not name a contact")
    return payload["c"]
