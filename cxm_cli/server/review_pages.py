"""The rating page behind review-request links, served by ``cxm serve``.

``GET /reviews/rate/<token>`` shows five scores and changes nothing (mail
scanners follow links). Posting a score records it once and shows, to every
customer whatever the score, the public review links with a private feedback
form beside them. A forged, altered or expired token gets a polite error page
and nothing is recorded; a used one says it was used.

No review gating: the public links are on the page for a 1 as for a 5.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from flask import Blueprint, Response, g, render_template, request

from cxm_cli import clock as clocks
from cxm_cli.contacts import get_contact
from cxm_cli.errors import InputError, NotFound
from cxm_cli.reviews import deliveries, links
from cxm_cli.reviews.answers import (
    AlreadyRated,
    get_request,
    public_links,
    record_feedback,
    record_rating,
)
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.server import current_clock, current_db, current_workspace
from cxm_cli.store import loads, write_transaction

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SCORES = [
    (5, "Excellent"),
    (4, "Good"),
    (3, "OK"),
    (2, "Poor"),
    (1, "Very poor"),
]
TIMELINE_LIMIT = 200

blueprint = Blueprint(
    "reviews", __name__, url_prefix=links.URL_PREFIX, template_folder=str(TEMPLATES)
)


def _page(name: str, status: int = 200, **values) -> Response:
    workspace = current_workspace()
    body = render_template(
        f"reviews/{name}.html", business=workspace.business_name, **values
    )
    response = Response(body, status=status, mimetype="text/html")
    # Links carry tokens: keep them out of caches and other sites' logs.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _refused(reason: str, status: int = 400) -> Response:
    return _page("error", status=status, reason=reason)


def _claim(purpose: str, token: str):
    """(request row, nonce) for a valid token, or an error response."""
    workspace = current_workspace()
    settings = ReviewSettings.of(workspace)
    try:
        claim = links.read_claim(
            workspace, purpose, token, max_age_days=settings.link_expiry_days
        )
        row = get_request(current_db(), claim.request_id)
    except (links.LinkRefused, NotFound) as exc:
        log.info("review link refused (%s)", type(exc).__name__)
        return None, _refused("expired" if "expired" in str(exc) else "invalid")

    expected = row["nonce"]
    if purpose == links.FEEDBACK:
        expected = links.feedback_nonce(expected)
    if claim.nonce != expected:
        return None, _refused("invalid")
    return (row, claim.nonce), None


def _used(db, nonce: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM review_token_uses WHERE nonce = ?", [nonce]
    ).fetchone()
    return found is not None


def _use(db, clock, nonce: str, request_id: int, purpose: str) -> bool:
    """Mark a link used; False when it was used already (by anyone)."""
    try:
        db["review_token_uses"].insert(
            {
                "nonce": nonce,
                "request_id": request_id,
                "purpose": purpose,
                "used_at": clocks.now_iso(clock),
            }
        )
    except sqlite3.IntegrityError:
        return False
    return True


def _score(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if 1 <= value <= 5 else None


@blueprint.get("/rate/<token>")
def rating_page(token: str):
    found, error = _claim(links.RATE, token)
    if error:
        return error
    row, nonce = found
    if row["rating"] is not None or _used(current_db(), nonce):
        return _already(row)
    return _page(
        "rate",
        scores=SCORES,
        selected=_score(request.args.get("score")),
        action=request.path,
    )


@blueprint.post("/rate/<token>")
def rate(token: str):
    found, error = _claim(links.RATE, token)
    if error:
        return error
    row, nonce = found
    score = _score(request.form.get("score"))
    if score is None:
        return _page(
            "rate",
            status=400,
            scores=SCORES,
            selected=None,
            action=request.path,
            problem="Please pick a score from 1 to 5.",
        )

    workspace, db, clock = current_workspace(), current_db(), current_clock()
    try:
        with write_transaction(db):
            if not _use(db, clock, nonce, row["id"], links.RATE):
                raise AlreadyRated("link used")
            outcome = record_rating(workspace, db, clock, row["id"], score, via="web")
    except AlreadyRated:
        return _already(row)
    except InputError:
        return _refused("invalid")

    return _page(
        "thanks",
        rating=outcome.rating,
        low=outcome.low,
        platforms=outcome.public_links,
        feedback_action=links.feedback_path(workspace, row["id"], row["nonce"]),
    )


@blueprint.get("/feedback/<token>")
def feedback_page(token: str):
    found, error = _claim(links.FEEDBACK, token)
    if error:
        return error
    row, nonce = found
    if _used(current_db(), nonce):
        return _already(row, feedback=True)
    return _page(
        "feedback",
        platforms=public_links(row),
        feedback_action=request.path,
    )


@blueprint.post("/feedback/<token>")
def feedback(token: str):
    found, error = _claim(links.FEEDBACK, token)
    if error:
        return error
    row, nonce = found
    text = (request.form.get("feedback") or "").strip()
    if not text:
        return _page(
            "feedback",
            status=400,
            platforms=public_links(row),
            feedback_action=request.path,
            problem="Please write a few words before sending.",
        )

    workspace, db, clock = current_workspace(), current_db(), current_clock()
    with write_transaction(db):
        if not _use(db, clock, nonce, row["id"], links.FEEDBACK):
            return _already(row, feedback=True)
        record_feedback(workspace, db, clock, row["id"], text, channel="web")
    return _page("feedback_sent", platforms=public_links(row))


def _already(row: dict, *, feedback: bool = False) -> Response:
    """A used link: nothing new is recorded; the public links stay offered."""
    return _page("used", status=409, platforms=public_links(row), feedback=feedback)


# Limitation: the staff link is a bearer link: whoever holds the alert can read
# that contact's timeline for STAFF_LINK_DAYS; there are no staff logins.
@blueprint.get("/staff/timeline/<token>")
def staff_timeline(token: str):
    """A read-only timeline for the staff member following an alert."""
    workspace, db = current_workspace(), current_db()
    try:
        contact_id = links.read_staff_timeline(workspace, token)
        contact = get_contact(db, contact_id)
    except (links.LinkRefused, NotFound):
        return _refused("invalid")
    events = [
        {**event, "data": loads(event["data"], {})}
        for event in db.query(
            "SELECT type, at, data, source FROM events WHERE contact_id = ? "
            "ORDER BY at DESC, id DESC LIMIT ?",
            [contact_id, TIMELINE_LIMIT],
        )
    ]
    feedback_rows = list(
        db.query(
            "SELECT at, rating, body, channel FROM review_feedback "
            "WHERE contact_id = ? ORDER BY at DESC",
            [contact_id],
        )
    )
    return _page("timeline", contact=contact, events=events, feedback=feedback_rows)


@blueprint.after_app_request
def deliver_after_request(response: Response) -> Response:
    """Send what an answer queued (thank-you texts, staff alerts) once the
    response has gone out, so the provider's webhook is answered at once."""
    if "cxm_db" not in g:
        return response
    workspace, clock = current_workspace(), current_clock()
    if not deliveries.has_pending(g.cxm_db, clock):
        return response

    def deliver() -> None:
        db = workspace.open_db()
        try:
            deliveries.deliver_pending(workspace, db, clock)
        finally:
            db.close()

    response.call_on_close(deliver)
    return response
