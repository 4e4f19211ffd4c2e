"""Running the audit: one pass over the timeline, every measure, the findings.

The result is a plain JSON-ready dict (``--json`` prints it as it is); the
terminal, Markdown and HTML renderers only format it.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.audit.findings import rank_findings
from cxm_cli.audit.funnel import Funnel, configured_pipelines
from cxm_cli.audit.history import read_histories
from cxm_cli.audit.measures import (
    Appointments,
    Attribution,
    FollowUpDepth,
    Retention,
    Reviews,
    SpeedToLead,
    Unanswered,
    public_reviews,
)
from cxm_cli.audit.options import AuditOptions

log = logging.getLogger(__name__)

REPORT_VERSION = 1
_NAME_CHUNK = 500


def run_audit(
    db,
    options: AuditOptions,
    *,
    clock,
    workspace=None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every measure over ``options``' period, and the findings to act on."""
    speed = SpeedToLead(options)
    unanswered = Unanswered(options)
    follow_up = FollowUpDepth(options)
    funnel = Funnel(options, configured_pipelines(workspace))
    appointments = Appointments(options)
    reviews = Reviews(options)
    attribution = Attribution(options)
    retention = Retention(options)
    measures = (
        speed,
        unanswered,
        follow_up,
        funnel,
        appointments,
        reviews,
        attribution,
        retention,
    )

    contacts_seen = 0
    # The pass allocates millions of small objects and no reference cycles;
    # the cycle collector would walk them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for history in read_histories(db, as_of=options.as_of):
            contacts_seen += 1
            for measure in measures:
                measure.add(history)
    finally:
        if collecting:
            gc.enable()

    audit: dict[str, Any] = {
        "report": {
            "version": REPORT_VERSION,
            "business": workspace.business_name if workspace is not None else None,
            "generated_at": clocks.now_iso(clock),
            "since": options.since,
            "until": options.as_of,
            "timezone": options.timezone,
            "lapsed_days": options.lapsed_days,
            "reminder_hours": options.reminder_hours,
            "source": source or {"kind": "workspace"},
            "totals": {**_totals(db, options), "contacts_with_activity": contacts_seen},
        },
        "speed_to_lead": speed.result(),
        "unanswered": unanswered.result(),
        "follow_up": follow_up.result(),
        "funnel": funnel.result(),
        "appointments": appointments.result(),
        "reviews": reviews.result(public_reviews(db, options)),
        "attribution": attribution.result(),
        "retention": retention.result(),
    }
    findings = rank_findings(
        audit,
        top=options.top,
        lapsed_days=options.lapsed_days,
        reminder_hours=options.reminder_hours,
    )
    listed = [*audit["unanswered"]["conversations"], *audit["retention"]["lapsed"]]
    names = contact_names(
        db,
        {i for f in findings for i in f["contact_ids"]}
        | {row["contact_id"] for row in listed},
    )
    for row in listed:
        row["name"] = names.get(row["contact_id"], f"#{row['contact_id']}")
    for finding in findings:
        finding["contacts"] = [
            {"id": i, "name": names.get(i, f"#{i}")} for i in finding["contact_ids"]
        ]
    audit["findings"] = findings
    log.info("audit of %d contacts: %d findings", contacts_seen, len(findings))
    return audit


def _totals(db, options: AuditOptions) -> dict[str, int]:
    def count(sql: str) -> int:
        return db.conn.execute(sql, [options.as_of]).fetchone()[0]

    return {
        "contacts": count("SELECT count(*) FROM contacts WHERE created_at < ?"),
        "events": count("SELECT count(*) FROM events WHERE at < ?"),
        "messages": count("SELECT count(*) FROM messages WHERE at < ?"),
    }


def contact_names(db, ids: set[int]) -> dict[int, str]:
    """How to call each contact in a report: name, else email, else phone."""
    names: dict[int, str] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), _NAME_CHUNK):
        chunk = ordered[start : start + _NAME_CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for row in db.conn.execute(
            "SELECT id, display_name, first_name, last_name, company, email, phone "
            f"FROM contacts WHERE id IN ({marks})",
            chunk,
        ):
            contact_id, display, first, last, company, email, phone = row
            full = " ".join(part for part in (first, last) if part)
            names[contact_id] = (
                display or full or company or email or phone or f"#{contact_id}"
            )
    return names
