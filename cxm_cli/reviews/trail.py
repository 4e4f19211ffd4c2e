"""``cxm reviews audit-trail``: proof that nobody was filtered by score.

One row per request cxm considered: who, when, on which channel, what the
message offered (the public review links, the rating page, "reply 1 to 5"),
the answer, and whether the public links were offered after the answer. Rows
that were not sent say why: a cool-down, the lifetime cap, consent, or a
refund during the guard delay. None of those reasons is, or can be, a score.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from cxm_cli.store import loads

COLUMNS = [
    "request_id",
    "contact_id",
    "contact",
    "status",
    "source",
    "sequence",
    "job",
    "job_at",
    "asked_at",
    "channel",
    "offered_public_links",
    "offered_rating_page",
    "offered_reply_rating",
    "reason_not_sent",
    "rating",
    "rated_at",
    "rated_via",
    "public_links_after_answer",
    "feedback_invited",
    "decided_by_score",
]


def trail_rows(db, *, since: str | None = None) -> list[dict[str, Any]]:
    rows = db.query(
        """
        SELECT r.*, c.display_name, c.first_name, c.last_name,
            (SELECT d.status || ': ' || COALESCE(d.last_error, '')
             FROM review_deliveries d WHERE d.request_id = r.id
             AND d.kind = 'thanks' ORDER BY d.id DESC LIMIT 1) AS thanks_delivery
        FROM review_requests r JOIN contacts c ON c.id = r.contact_id
        WHERE COALESCE(r.sent_at, r.created_at) >= ?
        ORDER BY COALESCE(r.sent_at, r.created_at), r.id
        """,
        [since or "0000"],
    )
    return [_trail_row(row) for row in rows]


def _trail_row(row: dict[str, Any]) -> dict[str, Any]:
    offered = loads(row["platforms"], [])
    asked = row["status"] in ("sent", "answered", "sending")
    name = row["display_name"] or " ".join(
        part for part in (row["first_name"], row["last_name"]) if part
    )
    after_answer = None
    if row["rating"] is not None:
        if row["rated_via"] == "web":
            after_answer = "shown on the rating page"
        elif row["thanks_sent_at"]:
            after_answer = f"thank-you text {row['thanks_sent_at']}"
        elif (row["thanks_delivery"] or "").startswith("failed"):
            after_answer = "thank-you text not delivered: " + row["thanks_delivery"][8:]
        else:
            after_answer = "thank-you text not delivered yet"
    return {
        "request_id": row["id"],
        "contact_id": row["contact_id"],
        "contact": name or None,
        "status": row["status"],
        "source": row["source"],
        "sequence": row["sequence"],
        "job": row["trigger_type"],
        "job_at": row["trigger_at"],
        "asked_at": row["sent_at"],
        "channel": row["channel"] if asked else None,
        "offered_public_links": (
            " | ".join(f"{o['name']} {o['url']}" for o in offered) if asked else None
        ),
        "offered_rating_page": bool(row["rating_page"]) if asked else None,
        "offered_reply_rating": (row["channel"] == "sms") if asked else None,
        "reason_not_sent": None if asked else row["reason"],
        "rating": row["rating"],
        "rated_at": row["rated_at"],
        "rated_via": row["rated_via"],
        "public_links_after_answer": after_answer,
        "feedback_invited": row["feedback_invited_at"],
        # Eligibility never reads ratings or feedback (see requests.py).
        "decided_by_score": False,
    }


def trail_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The compliance check in figures."""
    asked = [r for r in rows if r["asked_at"]]
    answered = [r for r in rows if r["rating"] is not None]
    without_links = [r for r in asked if not r["offered_public_links"]]
    after = [
        r
        for r in answered
        if r["public_links_after_answer"]
        and "not delivered" not in r["public_links_after_answer"]
    ]
    by_rating: dict[str, int] = {}
    for row in answered:
        by_rating[str(row["rating"])] = by_rating.get(str(row["rating"]), 0) + 1
    return {
        "considered": len(rows),
        "asked": len(asked),
        "asked_without_public_links": len(without_links),
        "answered": len(answered),
        "answers_by_rating": by_rating,
        "public_links_offered_after_answer": len(after),
        "answers_still_waiting_for_links": len(answered) - len(after),
        "not_sent": len(rows) - len(asked),
        "decisions_by_score": 0,
    }


def trail_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return buffer.getvalue()
