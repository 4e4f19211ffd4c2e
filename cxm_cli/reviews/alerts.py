"""Telling staff about a low score or private feedback, for service recovery.

An alert goes by email (through the workspace's email channel, to
``reviews.staff_email``) and/or as a JSON POST to ``reviews.alert_webhook_url``,
with a link to the contact's timeline. Alerts are queued as deliveries in the
answer's transaction and sent once it has committed (see ``deliveries.py``);
each outcome is a ``staff.alerted`` event on the contact's timeline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import requests

from cxm_cli import clock as clocks
from cxm_cli.channels import OutboundMessage, get_channel
from cxm_cli.contacts import get_contact
from cxm_cli.errors import ChannelError
from cxm_cli.reviews import links
from cxm_cli.reviews.settings import ReviewSettings

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Cxm-Signature"
KIND_TITLES = {"low_rating": "Low rating", "feedback": "Private feedback"}


def alert_payload(
    workspace,
    db,
    clock,
    *,
    contact_id: int,
    request_id: int | None,
    kind: str,
    rating: int | None,
    feedback: str | None = None,
) -> dict[str, Any]:
    """What staff are told: who, what score, what they wrote, where to look."""
    settings = ReviewSettings.of(workspace)
    contact = get_contact(db, contact_id)
    name = contact.get("display_name") or " ".join(
        part for part in (contact.get("first_name"), contact.get("last_name")) if part
    )
    return {
        "type": f"review.{kind}",
        "business": workspace.business_name,
        "request_id": request_id,
        "rating": rating,
        "feedback": feedback,
        "at": clocks.now_iso(clock),
        "contact": {
            "id": contact_id,
            "name": name or f"contact {contact_id}",
            "email": contact.get("email"),
            "phone": contact.get("phone"),
        },
        "timeline_url": links.staff_timeline_url(
            workspace, contact_id, settings.timeline_url
        ),
        "timeline_command": f"cxm timeline {contact_id}",
    }


def alert_targets(workspace) -> list[str]:
    """The delivery kinds configured for staff alerts."""
    settings = ReviewSettings.of(workspace)
    targets = []
    if settings.staff_email:
        targets.append("staff_email")
    if settings.alert_webhook_url:
        targets.append("staff_webhook")
    return targets


def email_text(payload: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the staff email."""
    kind = payload["type"].removeprefix("review.")
    title = KIND_TITLES.get(kind, "Review alert")
    contact = payload["contact"]
    score = f" ({payload['rating']}/5)" if payload.get("rating") else ""
    subject = f"{title}{score} from {contact['name']}"

    lines = [
        f"{title}{score} from {contact['name']} (contact {contact['id']}).",
        "",
    ]
    if payload.get("feedback"):
        lines += ["What they wrote:", "", payload["feedback"], ""]
    reach = ", ".join(v for v in (contact.get("phone"), contact.get("email")) if v)
    if reach:
        lines.append(f"Reach them at: {reach}")
    lines += [
        f"Timeline: {payload['timeline_url']}",
        f"Or in a terminal: {payload['timeline_command']}",
        "",
        "They were shown your public review links like every customer. Reach out",
        "to put things right; never make help depend on changing a review.",
    ]
    return subject, "\n".join(lines)


def send_staff_email(workspace, payload: dict[str, Any]) -> None:
    """Raises ChannelError when the email channel refuses or fails."""
    settings = ReviewSettings.of(workspace)
    subject, body = email_text(payload)
    channel = get_channel(workspace, "email")
    channel.send(
        OutboundMessage(
            channel="email",
            to=settings.staff_email or "",
            subject=f"[{workspace.business_name}] {subject}",
            body=body,
        )
    )


def post_webhook(workspace, payload: dict[str, Any]) -> None:
    """POST the alert as JSON; raises ChannelError on a refusal or failure.

    With ``reviews.alert_webhook_secret_env`` set, the body is signed with
    HMAC-SHA256 in the ``X-Cxm-Signature`` header so the receiver can tell the
    alert came from cxm.
    """
    settings = ReviewSettings.of(workspace)
    body = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "cxm-reviews"}
    secret = workspace.secret(settings.alert_webhook_secret_env)
    if secret:
        digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        headers[SIGNATURE_HEADER] = f"sha256={digest}"

    try:
        response = requests.post(
            settings.alert_webhook_url or "",
            data=body,
            headers=headers,
            timeout=WEBHOOK_TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        raise ChannelError(
            f"alert webhook unreachable ({type(exc).__name__})", transient=True
        ) from exc
    if response.status_code >= 300:
        transient = response.status_code == 429 or response.status_code >= 500
        raise ChannelError(
            f"alert webhook answered HTTP {response.status_code}",
            transient=transient,
            provider_code=str(response.status_code),
        )
