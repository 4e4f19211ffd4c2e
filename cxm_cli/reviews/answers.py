"""What happens when a customer answers a review request.

Whatever the score, the answer is met with the public review links: by text
(a thank-you message) or on the rating page. A score of ``low_rating_max`` or
less (1 to 3 by default) *also* invites the person to tell the owner what went
wrong, and alerts staff. The low-score path is added beside the public one,
never instead of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.errors import CxmError, InputError, NotFound
from cxm_cli.events import Event, record_event
from cxm_cli.reviews import deliveries, links
from cxm_cli.reviews.ratings import parse_rating
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.store import fetch_one, loads, write_transaction

log = logging.getLogger(__name__)

MAX_FEEDBACK_CHARS = 5000


class AlreadyRated(CxmError):
    """The request has a rating already; a second one is not recorded."""


@dataclass
class RatingOutcome:
    request_id: int
    contact_id: int
    rating: int
    low: bool
    public_links: list[dict[str, str]]
    feedback_url: str | None = None


def get_request(db, request_id: int) -> dict[str, Any]:
    row = fetch_one(db, "SELECT * FROM review_requests WHERE id = ?", [request_id])
    if row is None:
        raise NotFound(f"no review request with id {request_id}")
    return row


def public_links(row: dict[str, Any]) -> list[dict[str, str]]:
    return loads(row["platforms"], [])


def record_rating(
    workspace, db, clock, request_id: int, rating: int, *, via: str
) -> RatingOutcome:
    """Record a rating once; queue the thank-you with the public links (every
    score) and, for a low score, the invitation and the staff alert.

    ``via`` is ``sms`` (the thank-you and the invitation go out as texts) or
    ``web`` (the rating page shows the links and the feedback form itself).
    Called inside a transaction (an inbound text), the queued deliveries wait
    for :func:`deliveries.deliver_pending`; otherwise they are sent at once.
    """
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise InputError(f"a rating is a whole number from 1 to 5, not {rating!r}")
    settings = ReviewSettings.of(workspace)
    now = clocks.now_iso(clock)
    low = rating <= settings.low_rating_max

    with write_transaction(db):
        row = get_request(db, request_id)
        if row["rating"] is not None:
            raise AlreadyRated(f"review request {request_id} was already rated")
        if row["status"] not in ("sent", "sending"):
            raise InputError(f"review request {request_id} was never sent")
        changes: dict[str, Any] = {
            "rating": rating,
            "rated_at": now,
            "rated_via": via,
            "status": "answered",
            "updated_at": now,
        }
        if via == "web":
            # The page shows the public links and the feedback form to all.
            changes.update(thanks_sent_at=now, feedback_invited_at=now)
        db["review_requests"].update(request_id, changes)
        record_event(
            db,
            row["contact_id"],
            "review.rated",
            clock=clock,
            data={"request_id": request_id, "rating": rating, "via": via},
            source=via,
        )
        if via == "sms":
            for kind in ("thanks", "invite") if low else ("thanks",):
                deliveries.queue(
                    db,
                    clock,
                    contact_id=row["contact_id"],
                    request_id=request_id,
                    kind=kind,
                    payload={"channel": "sms"},
                )
        if low:
            deliveries.queue_staff_alert(
                workspace,
                db,
                clock,
                contact_id=row["contact_id"],
                request_id=request_id,
                kind="low_rating",
                rating=rating,
            )

    deliveries.deliver_pending(workspace, db, clock, request_id=request_id)
    log.info("review request %s rated %d via %s", request_id, rating, via)
    return RatingOutcome(
        request_id=request_id,
        contact_id=row["contact_id"],
        rating=rating,
        low=low,
        public_links=public_links(row),
        feedback_url=links.feedback_url(workspace, request_id, row["nonce"]),
    )


def record_feedback(
    workspace,
    db,
    clock,
    request_id: int,
    body: str,
    *,
    channel: str,
) -> int:
    """Keep private feedback for the owner and alert staff."""
    body = (body or "").strip()
    if not body:
        raise InputError("the feedback is empty")
    body = body[:MAX_FEEDBACK_CHARS]

    with write_transaction(db):
        row = get_request(db, request_id)
        feedback_id = (
            db["review_feedback"]
            .insert(
                {
                    "request_id": request_id,
                    "contact_id": row["contact_id"],
                    "channel": channel,
                    "rating": row["rating"],
                    "body": body,
                    "at": clocks.now_iso(clock),
                }
            )
            .last_pk
        )
        record_event(
            db,
            row["contact_id"],
            "feedback.received",
            clock=clock,
            data={
                "request_id": request_id,
                "rating": row["rating"],
                "feedback_id": feedback_id,
                "channel": channel,
            },
            source=channel,
        )
        deliveries.queue_staff_alert(
            workspace,
            db,
            clock,
            contact_id=row["contact_id"],
            request_id=request_id,
            kind="feedback",
            rating=row["rating"],
            feedback=body,
        )
    deliveries.deliver_pending(workspace, db, clock, request_id=request_id)
    log.info("feedback %s recorded for review request %s", feedback_id, request_id)
    return feedback_id


# ---------------------------------------------------------------- SMS replies


def open_sms_request(db, clock, contact_id: int, settings: ReviewSettings):
    """The contact's latest SMS request still waiting for a rating, if any."""
    since = clock.now() - timedelta(days=settings.answer_window_days)
    return fetch_one(
        db,
        "SELECT * FROM review_requests WHERE contact_id = ? AND channel = 'sms' "
        "AND status IN ('sent', 'sending') AND rating IS NULL AND sent_at >= ? "
        "ORDER BY sent_at DESC, id DESC LIMIT 1",
        [contact_id, clocks.iso(since)],
    )


def awaiting_sms_feedback(db, clock, contact_id: int, settings: ReviewSettings):
    """A low SMS rating whose invitation to say what went wrong is still open.

    Only the first text after the invitation is taken as the feedback; later
    ones are the ordinary conversation staff now carry on in the inbox.
    """
    since = clock.now() - timedelta(days=settings.feedback_window_days)
    return fetch_one(
        db,
        "SELECT * FROM review_requests WHERE contact_id = ? AND rated_via = 'sms' "
        "AND rating <= ? AND feedback_invited_at >= ? AND NOT EXISTS ("
        "  SELECT 1 FROM review_feedback f WHERE f.request_id = review_requests.id"
        "  AND f.channel = 'sms') "
        "ORDER BY rated_at DESC, id DESC LIMIT 1",
        [contact_id, settings.low_rating_max, clocks.iso(since)],
    )


def handle_inbound_sms(workspace, db, clock, event: Event) -> str | None:
    """Read an inbound text as a rating or as the feedback a low score invited.

    Returns what it was taken for (``rating`` / ``feedback``) or None. Carrier
    keywords (STOP, HELP, ...) are never ratings or feedback.
    """
    if event.contact_id is None or event.data.get("keyword"):
        return None
    message = fetch_one(
        db,
        "SELECT body, channel, direction FROM messages WHERE id = ?",
        [event.data.get("message_id")],
    )
    if not message or message["channel"] != "sms" or message["direction"] != "inbound":
        return None
    settings = ReviewSettings.of(workspace)

    request = open_sms_request(db, clock, event.contact_id, settings)
    if request is not None:
        rating = parse_rating(message["body"])
        if rating is None:
            return None
        record_rating(workspace, db, clock, request["id"], rating, via="sms")
        return "rating"

    invited = awaiting_sms_feedback(db, clock, event.contact_id, settings)
    if invited is not None and (message["body"] or "").strip():
        record_feedback(
            workspace, db, clock, invited["id"], message["body"], channel="sms"
        )
        return "feedback"
    return None
