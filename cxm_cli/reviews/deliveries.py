"""Messages and alerts that follow an answer, sent after the answer commits.

An SMS rating arrives inside the inbound message's transaction, and
``send_message`` (rightly) refuses to call a provider while a write lock is
held. So answering queues its consequences here and :func:`deliver_pending`
sends them afterwards: ``cxm serve`` right after each request that queued
something, ``cxm reviews send-due`` from cron, and the rating page at once.

A delivery is claimed (``pending`` -> ``sending``) under the write lock before
it is sent, so two processes never send one twice; a transient failure goes
back to ``pending`` with a later ``next_at``, up to ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.errors import ChannelError, CxmError
from cxm_cli.events import record_event
from cxm_cli.reviews import alerts, links
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.store import dumps, fetch_one, loads, write_transaction

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_MINUTES = (1, 5, 30, 120)
MESSAGE_KINDS = {"thanks": "thanks_sent_at", "invite": "feedback_invited_at"}


@dataclass
class Delivered:
    id: int
    kind: str
    status: str  # sent | failed | retry
    error: str | None = None


def queue(
    db,
    clock,
    *,
    contact_id: int,
    request_id: int | None,
    kind: str,
    payload: dict[str, Any] | None = None,
) -> int:
    now = clocks.now_iso(clock)
    return (
        db["review_deliveries"]
        .insert(
            {
                "request_id": request_id,
                "contact_id": contact_id,
                "kind": kind,
                "payload": dumps(payload or {}),
                "status": "pending",
                "next_at": now,
                "created_at": now,
            }
        )
        .last_pk
    )


def has_pending(db, clock) -> bool:
    return (
        fetch_one(
            db,
            "SELECT 1 AS x FROM review_deliveries WHERE status = 'pending' "
            "AND next_at <= ? LIMIT 1",
            [clocks.now_iso(clock)],
        )
        is not None
    )


# Limitation: an SMS answer recorded outside `cxm serve` (say `cxm inbox record`)
# gets its thank-you only when `cxm run` or `cxm reviews send-due` runs next.
def deliver_pending(
    workspace, db, clock, *, request_id: int | None = None, limit: int = 200
) -> list[Delivered]:
    """Send what is due; never raises for one failed delivery."""
    if db.conn.in_transaction:
        # Called from inside someone's transaction: leave it for later.
        return []
    sql = "SELECT id FROM review_deliveries WHERE status = 'pending' AND next_at <= ?"
    params: list[Any] = [clocks.now_iso(clock)]
    if request_id is not None:
        sql += " AND request_id = ?"
        params.append(request_id)
    sql += " ORDER BY id LIMIT ?"
    params.append(limit)

    results = []
    for row in list(db.query(sql, params)):
        claimed = _claim(db, row["id"])
        if claimed is not None:
            results.append(_deliver(workspace, db, clock, claimed))
    return results


def _claim(db, delivery_id: int) -> dict | None:
    with write_transaction(db):
        cursor = db.execute(
            "UPDATE review_deliveries SET status = 'sending', "
            "attempts = attempts + 1 WHERE id = ? AND status = 'pending'",
            [delivery_id],
        )
        if cursor.rowcount != 1:
            return None
        return fetch_one(
            db, "SELECT * FROM review_deliveries WHERE id = ?", [delivery_id]
        )


def _deliver(workspace, db, clock, delivery: dict) -> Delivered:
    kind = delivery["kind"]
    payload = loads(delivery["payload"], {})
    message_id = None
    try:
        if kind in MESSAGE_KINDS:
            message_id = _send_answer_text(workspace, db, clock, delivery, payload)
        elif kind == "staff_email":
            alerts.send_staff_email(workspace, payload)
        elif kind == "staff_webhook":
            alerts.post_webhook(workspace, payload)
        else:
            raise CxmError(f"unknown review delivery kind {kind!r}")
    except ChannelError as exc:
        return _failed(db, clock, delivery, exc.message, transient=exc.transient)
    except CxmError as exc:
        # Consent refused, a broken template or setting: retrying will not help
        # until a person changes something; the trail shows why.
        return _failed(db, clock, delivery, exc.message, transient=False)

    now = clocks.now_iso(clock)
    with write_transaction(db):
        db["review_deliveries"].update(
            delivery["id"],
            {
                "status": "sent",
                "finished_at": now,
                "message_id": message_id,
                "last_error": None,
            },
        )
        if kind in MESSAGE_KINDS and delivery["request_id"]:
            db["review_requests"].update(
                delivery["request_id"], {MESSAGE_KINDS[kind]: now, "updated_at": now}
            )
        if kind.startswith("staff_"):
            _record_alert_event(db, clock, delivery, payload, "sent", None)
    log.info("review delivery %s (%s) sent", delivery["id"], kind)
    return Delivered(delivery["id"], kind, "sent")


def _failed(db, clock, delivery: dict, error: str, *, transient: bool) -> Delivered:
    kind = delivery["kind"]
    retry = transient and delivery["attempts"] < MAX_ATTEMPTS
    now = clock.now()
    with write_transaction(db):
        if retry:
            wait = RETRY_MINUTES[min(delivery["attempts"], len(RETRY_MINUTES)) - 1]
            db["review_deliveries"].update(
                delivery["id"],
                {
                    "status": "pending",
                    "next_at": clocks.iso(now + timedelta(minutes=wait)),
                    "last_error": error,
                },
            )
        else:
            db["review_deliveries"].update(
                delivery["id"],
                {
                    "status": "failed",
                    "finished_at": clocks.iso(now),
                    "last_error": error,
                },
            )
            if kind.startswith("staff_"):
                _record_alert_event(
                    db, clock, delivery, loads(delivery["payload"], {}), "failed", error
                )
    log.warning(
        "review delivery %s (%s) failed%s",
        delivery["id"],
        kind,
        ", will retry" if retry else "",
    )
    return Delivered(delivery["id"], kind, "retry" if retry else "failed", error)


def _record_alert_event(db, clock, delivery, payload, status, error) -> None:
    data = {
        "request_id": delivery["request_id"],
        "kind": payload.get("type", "").removeprefix("review."),
        "target": delivery["kind"].removeprefix("staff_"),
        "status": status,
    }
    if error:
        data["error"] = error
    record_event(
        db,
        delivery["contact_id"],
        "staff.alerted",
        clock=clock,
        data=data,
        source="reviews",
    )


def _send_answer_text(
    workspace, db, clock, delivery: dict, payload: dict
) -> int | None:
    """The thank-you (public links, any score) or the low-score invitation."""
    from cxm_cli.messaging import send_message

    settings = ReviewSettings.of(workspace)
    request = fetch_one(
        db, "SELECT * FROM review_requests WHERE id = ?", [delivery["request_id"]]
    )
    if request is None:
        raise CxmError(f"review request {delivery['request_id']} no longer exists")
    template = (
        settings.thanks_template
        if delivery["kind"] == "thanks"
        else settings.low_score_template
    )
    sent = send_message(
        workspace,
        db,
        clock,
        delivery["contact_id"],
        payload.get("channel", "sms"),
        template=template,
        extra=answer_extra(workspace, request),
        source="reviews",
        automated=True,
    )
    return sent.message_id


def answer_extra(workspace, request: dict) -> dict[str, Any]:
    """Template values of the thank-you and the invitation."""
    offered = loads(request["platforms"], [])
    return {
        "rating": request["rating"],
        "review_links": offered,
        "review_url": offered[0]["url"] if offered else None,
        "review_platform": offered[0]["name"] if offered else None,
        "feedback_url": links.feedback_url(workspace, request["id"], request["nonce"]),
        "request_id": request["id"],
    }


def queue_staff_alert(
    workspace,
    db,
    clock,
    *,
    contact_id: int,
    request_id: int | None,
    kind: str,
    rating: int | None,
    feedback: str | None = None,
) -> list[int]:
    """Queue the staff alert on every configured target.

    With no target configured the alert still lands on the timeline, as a
    ``staff.alerted`` event saying nobody could be told.
    """
    targets = alerts.alert_targets(workspace)
    if not targets:
        record_event(
            db,
            contact_id,
            "staff.alerted",
            clock=clock,
            data={
                "request_id": request_id,
                "kind": kind,
                "target": None,
                "status": "not_configured",
            },
            source="reviews",
        )
        log.warning("review alert for request %s: no staff target set", request_id)
        return []
    payload = alerts.alert_payload(
        workspace,
        db,
        clock,
        contact_id=contact_id,
        request_id=request_id,
        kind=kind,
        rating=rating,
        feedback=feedback,
    )
    return [
        queue(
            db,
            clock,
            contact_id=contact_id,
            request_id=request_id,
            kind=target,
            payload=payload,
        )
        for target in targets
    ]
