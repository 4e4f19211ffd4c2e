"""Speed to lead in a young workspace: unanswered is not the same as slow.

A lead nobody has answered yet counts as "waited over an hour" only once an
hour has passed by the audit's end (``--until``, else now); before that it is
"not answered yet".
"""

from __future__ import annotations

from cxm_cli.audit import run_audit
from cxm_cli.audit.options import make_options
from tests.test_audit_helpers import HistoryBuilder

NOW = "2026-03-02T15:00:00Z"  # the clock fixture's time


def three_fresh_leads(db, clock) -> dict[str, int]:
    """Three web leads from the last two minutes; only one answered (in 55 s)."""
    h = HistoryBuilder(db, clock)
    for key, at in (
        ("ana", "2026-03-02T14:58:00Z"),
        ("ben", "2026-03-02T14:58:30Z"),
        ("cy", "2026-03-02T14:59:00Z"),
    ):
        h.contact(key, created=at)
        h.event(key, "lead.created", at, source="web")
    h.message("ana", "outbound", "2026-03-02T14:58:55Z")
    return h.ids


def speed_findings(audit):
    return [f for f in audit["findings"] if f["kind"] == "slow_leads"]


def test_leads_minutes_old_are_not_answered_yet_not_slow(db, clock, workspace):
    three_fresh_leads(db, clock)
    options = make_options(clock=clock, since="1d")
    audit = run_audit(db, options, clock=clock, workspace=workspace)

    overall = audit["speed_to_lead"]["overall"]
    assert (overall["leads"], overall["answered"]) == (3, 1)
    assert (overall["over_1_hour"], overall["never"], overall["not_yet"]) == (0, 0, 2)
    buckets = {b["label"]: b["count"] for b in audit["speed_to_lead"]["buckets"]}
    assert buckets["not answered yet"] == 2 and buckets["never"] == 0
    assert speed_findings(audit) == []


def test_the_same_leads_an_hour_later_did_wait_over_an_hour(db, clock, workspace):
    ids = three_fresh_leads(db, clock)
    clock.advance(hours=2)
    options = make_options(clock=clock, since="1d")
    audit = run_audit(db, options, clock=clock, workspace=workspace)

    overall = audit["speed_to_lead"]["overall"]
    assert (overall["over_1_hour"], overall["never"], overall["not_yet"]) == (2, 2, 0)
    (finding,) = speed_findings(audit)
    assert finding["title"] == (
        "67% of leads waited over an hour; 2 were never answered"
    )
    assert finding["contact_ids"] == sorted([ids["ben"], ids["cy"]])


def test_until_is_the_moment_waits_are_measured_to(db, clock, workspace):
    three_fresh_leads(db, clock)
    clock.advance(days=3)
    # Looking from one minute after the last lead arrived, not from now.
    early = make_options(clock=clock, since="2026-03-01", until="2026-03-02T15:00:00Z")
    audit = run_audit(db, early, clock=clock, workspace=workspace)
    assert audit["speed_to_lead"]["overall"]["not_yet"] == 2
    assert speed_findings(audit) == []


def test_a_finding_mentions_leads_not_answered_yet(db, clock, workspace):
    h = HistoryBuilder(db, clock)
    for key, at in (
        ("dee", "2026-03-02T10:00:00Z"),
        ("eli", "2026-03-02T11:00:00Z"),
        ("fay", "2026-03-02T12:00:00Z"),
        ("gus", "2026-03-02T14:50:00Z"),
    ):
        h.contact(key, created=at)
        h.event(key, "lead.created", at, source="web")
    h.message("dee", "outbound", "2026-03-02T10:02:00Z")
    options = make_options(clock=clock, since="1d")
    audit = run_audit(db, options, clock=clock, workspace=workspace)

    (finding,) = speed_findings(audit)
    assert finding["title"] == (
        "50% of leads waited over an hour; 2 were never answered; 1 not answered yet"
    )
    assert h.ids["gus"] not in finding["contact_ids"]
