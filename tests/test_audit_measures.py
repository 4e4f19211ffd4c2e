"""Every audit measure against numbers worked out by hand from a known history.

The history (tests/test_audit_helpers.py) covers February 2026; each expected
value below is computed from it in the comment beside it.
"""

from __future__ import annotations

import pytest

from cxm_cli.audit import run_audit
from cxm_cli.audit.options import make_options
from tests.test_audit_helpers import SINCE, UNTIL, build_known_history

HOUR = 3600
DAY = 86400


@pytest.fixture
def known(db, clock, workspace):
    ids = build_known_history(db, clock)
    options = make_options(clock=clock, since=SINCE, until=UNTIL, timezone="UTC")
    audit = run_audit(db, options, clock=clock, workspace=workspace)
    return audit, ids


def group(rows, key, name):
    matches = [row for row in rows if row[key] == name]
    assert len(matches) == 1, f"no single {key}={name} in {rows}"
    return matches[0]


def test_speed_to_lead(known):
    audit, ids = known
    speed = audit["speed_to_lead"]
    # Leads with first inbound in February: c1 c2 c3 c4 c6 c7 c8 (c5, c9 earlier).
    # Replies: c1 180 s, c2 7200, c3 240 (from the export's 11:00Z, not the
    # 12:00Z record), c6 120, c7 25 h = 90000, c8 60; c4's only reply failed.
    assert speed["overall"] == {
        "leads": 7,
        "answered": 6,
        "median_seconds": 210.0,  # (180 + 240) / 2 of 60 120 180 240 7200 90000
        "p90_seconds": 90000.0,  # nearest rank: ceil(0.9 * 6) = 6th
        "within_5_min": 4,
        "within_5_min_share": 0.5714,
        "within_1_hour": 4,
        "within_1_hour_share": 0.5714,
        "over_1_hour": 3,  # c2, c7 and c4 (never)
        "over_1_hour_share": 0.4286,
        "never": 1,
        "never_share": 0.1429,
        "not_yet": 0,  # c4 waited weeks to the audit's end, not minutes
        "not_yet_share": 0.0,
    }
    web = group(speed["by_source"], "source", "web")  # 180, 7200, 120, 90000
    assert web["leads"] == 4
    assert web["median_seconds"] == 3690.0
    assert web["p90_seconds"] == 90000.0
    assert web["over_1_hour_share"] == 0.5
    facebook = group(speed["by_source"], "source", "facebook")  # 240, never, 60
    assert (facebook["leads"], facebook["median_seconds"], facebook["never"]) == (
        3,
        150.0,
        1,
    )
    assert facebook["p90_seconds"] == 240.0
    form = group(speed["by_channel"], "channel", "form")  # c1 c6 c7
    assert (form["leads"], form["median_seconds"]) == (3, 180.0)
    lead = group(speed["by_channel"], "channel", "lead")  # c2 c3 c8
    assert (lead["leads"], lead["median_seconds"]) == (3, 240.0)
    sms = group(speed["by_channel"], "channel", "sms")  # c4 wrote in by text
    assert (sms["leads"], sms["never"]) == (1, 1)
    assert [b["count"] for b in speed["buckets"]] == [4, 0, 1, 1, 1, 0]
    c3 = group(speed["leads"], "contact_id", ids["c3"])
    assert c3["inbound_at"] == "2026-02-07T11:00:00.000000Z"
    assert c3["seconds"] == 240


def test_unanswered_conversations(known):
    audit, ids = known
    unanswered = audit["unanswered"]
    # c3: last message theirs at 02-09 12:00 -> 19.5 days to 03-01 00:00.
    # c4: 02-15 20:00 -> 13 days 4 hours. c8 said STOP and opted out: not
    # waiting. c2's only inbound was an auto-reply. c2's March text is after.
    assert unanswered["overall"] == {
        "conversations": 2,
        "median_wait_seconds": (19.5 * DAY + (13 * DAY + 4 * HOUR)) / 2,
        "longest_wait_seconds": 19.5 * DAY,
    }
    assert [r["contact_id"] for r in unanswered["conversations"]] == [
        ids["c3"],
        ids["c4"],
    ]
    assert unanswered["conversations"][0]["name"] == "C3"
    assert group(unanswered["by_source"], "source", "facebook")["conversations"] == 2
    assert group(unanswered["by_channel"], "channel", "sms")["conversations"] == 2
    assert [b["count"] for b in unanswered["buckets"]] == [0, 0, 0, 2]


def test_follow_up_depth(known):
    audit, ids = known
    follow = audit["follow_up"]
    # Touches to a response: c1 1 (replied 10:30), c3 3, c6 1, c8 1 (STOP).
    # No response: c2 (1 touch; the auto-reply does not count), c7 (1 touch;
    # its booking came before the touch). c4 never touched (reply failed).
    assert follow["overall"] == {
        "leads": 7,
        "contacted": 6,
        "never_touched": 1,
        "replied": 4,
        "reply_share": 0.6667,
        "median_touches_to_reply": 1.0,
        "mean_touches_to_reply": 1.5,
        "dropped_after_one_touch": 2,
        "dropped_after_one_touch_share": 0.3333,
    }
    assert sorted(follow["dropped_after_one_touch"]) == [ids["c2"], ids["c7"]]
    assert [r["leads"] for r in follow["replied_at_touch"]] == [3, 0, 1, 0]
    assert [r["leads"] for r in follow["silent_after_touches"]] == [2, 0, 0, 0]
    web = group(follow["by_source"], "source", "web")
    assert (web["contacted"], web["replied"], web["dropped_after_one_touch"]) == (
        4,
        2,
        2,
    )
    facebook = group(follow["by_source"], "source", "facebook")
    assert (facebook["never_touched"], facebook["median_touches_to_reply"]) == (1, 2.0)


def test_funnel(known):
    audit, ids = known
    names = [p["pipeline"] for p in audit["funnel"]["pipelines"]]
    assert names == ["lead journey", "intake"]
    intake = audit["funnel"]["pipelines"][1]
    # Cohort: c1 c2 c3 c6 c7 entered "intake" in February (c5 in 2024).
    # Furthest: c1 won, c2 contacted, c3 booked, c6 won, c7 new (then lost).
    assert intake["pipeline"] == "intake"
    assert intake["entered"] == 5
    stages = {s["stage"]: s for s in intake["stages"]}
    assert [s["stage"] for s in intake["stages"]] == [
        "new",
        "contacted",
        "booked",
        "won",
        "lost",
    ]
    assert [stages[s]["reached"] for s in ("new", "contacted", "booked", "won")] == [
        5,
        4,
        3,
        2,
    ]
    assert stages["new"]["conversion_to_next"] == 0.8
    assert stages["contacted"]["conversion_to_next"] == 0.75
    assert stages["booked"]["conversion_to_next"] == 0.6667
    assert stages["won"]["kind"] == "won"
    assert (stages["lost"]["kind"], stages["lost"]["reached"]) == ("lost", 1)
    # Stays in "new": 180, 7200, 82800, 120, 259200 s -> median 7200.
    assert stages["new"]["median_seconds_in_stage"] == 7200.0
    # "contacted": 82620, 165600, 780 -> 82620; "booked": 781200, 179100.
    assert stages["contacted"]["median_seconds_in_stage"] == 82620.0
    assert stages["booked"]["median_seconds_in_stage"] == 480150.0
    # Non-customers stop: c7 at new, c2 at contacted, c3 at booked; a tie
    # goes to the earliest stage.
    assert [stages[s]["stopped_here"] for s in ("new", "contacted", "booked")] == [
        1,
        1,
        1,
    ]
    assert intake["biggest_leak"]["stage"] == "new"
    assert intake["biggest_leak"]["contact_ids"] == [ids["c7"]]
    assert intake["overall"] == {
        "entered": 5,
        "won": 2,
        "won_share": 0.4,
        "lost": 1,
        "customers": 2,
        "customer_share": 0.4,
    }
    web = group(intake["by_source"], "source", "web")
    assert (web["entered"], web["won"], web["lost"]) == (4, 2, 1)


def test_lead_journey(known):
    audit, ids = known
    journey = audit["funnel"]["pipelines"][0]
    # Furthest milestone per lead: c1 paid, c2 contacted, c3 booked (no-show),
    # c4 lead, c6 paid, c7 booked (booked before the touch, so no response),
    # c8 booked (for March).
    stages = {s["stage"]: s for s in journey["stages"]}
    assert [s["stage"] for s in journey["stages"]] == [
        "lead",
        "contacted",
        "responded",
        "booked",
        "served",
        "paid",
    ]
    assert [s["reached"] for s in journey["stages"]] == [7, 6, 5, 5, 2, 2]
    assert stages["booked"]["conversion_to_next"] == 0.4
    # Time as a lead: 180, 7200, 240, 120, 1800 (c7 booked at 08:30), 60.
    assert stages["lead"]["median_seconds_in_stage"] == 210.0
    assert [s["stopped_here"] for s in journey["stages"]] == [1, 1, 0, 3, 0, 0]
    assert journey["biggest_leak"] == {
        "stage": "booked",
        "stopped": 3,
        "reached": 5,
        "share": 0.6,
        "contact_ids": [ids["c3"], ids["c7"], ids["c8"]],
    }


def test_appointments(known):
    audit, ids = known
    appointments = audit["appointments"]
    # Booked in February: c1, c3, c6, c7, c8 (c9's booking was in January).
    # Fell due: c1 completed (reminded by sms 02-09), c3 no-show (no message in
    # the 72 h before), c6 completed (email 02-21; the 09:02 and 09:12 texts
    # came before the booking), c9 completed (no reminder). c7 cancelled.
    assert appointments["overall"] == {
        "booked": 5,
        "completed": 3,
        "no_show": 1,
        "cancelled": 1,
        "no_show_rate": 0.25,
        "due": 4,
        "reminded": 2,
        "reminder_coverage": 0.5,
    }
    assert appointments["reminder_channels"] == {"sms": 1, "email": 1}
    assert [r["contact_id"] for r in appointments["no_shows"]] == [ids["c3"]]
    assert sorted(r["contact_id"] for r in appointments["not_reminded"]) == [
        ids["c3"],
        ids["c9"],
    ]
    web = group(appointments["by_source"], "source", "web")
    assert (web["booked"], web["completed"], web["cancelled"], web["reminded"]) == (
        3,
        2,
        1,
        2,
    )
    facebook = group(appointments["by_source"], "source", "facebook")
    assert (facebook["booked"], facebook["no_show_rate"]) == (2, 1.0)


def test_reviews(known):
    audit, ids = known
    reviews = audit["reviews"]
    # Requests in February: c1 (sms, rated 5), c6 (email, unanswered).
    # Jobs: c1, c6, c9 completed in February; c9 never asked.
    # Public: c1's google 5 (after its request) and an unmatched yelp 3; the
    # January google 2 is outside the period.
    assert reviews["overall"] == {
        "requests": 2,
        "answered": 1,
        "answer_rate": 0.5,
        "completed_jobs": 3,
        "requests_per_job": 0.67,
        "jobs_from": "appointments",
        "public_reviews": 2,
        "public_average_rating": 4.0,
        "public_reviews_after_request": 1,
    }
    assert reviews["by_month"] == [
        {
            "month": "2026-02",
            "ratings": 1,
            "average_rating": 5.0,
            "public_reviews": 2,
            "public_average_rating": 4.0,
        },
    ]
    assert reviews["by_platform"] == [
        {"platform": "google", "reviews": 1, "average_rating": 5.0},
        {"platform": "yelp", "reviews": 1, "average_rating": 3.0},
    ]
    assert [r["contact_id"] for r in reviews["jobs_not_asked"]] == [ids["c9"]]
    assert group(reviews["by_channel"], "channel", "sms")["answer_rate"] == 1.0
    assert group(reviews["by_channel"], "channel", "email")["answer_rate"] == 0.0
    web = group(reviews["by_source"], "source", "web")
    assert (web["requests"], web["completed_jobs"], web["requests_per_job"]) == (
        2,
        2,
        1.0,
    )


def test_attribution(known):
    audit, _ = known
    attribution = audit["attribution"]
    # Converted leads: c1, c6. Booked leads: c1 c3 c6 c7 c8. Revenue in
    # February: c1 200, c6 100 + 50, c9 300. Lifetime: c1 200, c5 150, c6 150,
    # c9 420 -> 920 over 4 paying customers.
    assert attribution["overall"] == {
        "leads": 7,
        "booked": 5,
        "converted": 2,
        "conversion": 0.2857,
        "revenue": 650.0,
        "customers": 4,
        "lifetime_value": 230.0,
    }
    assert group(attribution["by_source"], "source", "web") == {
        "source": "web",
        "leads": 4,
        "booked": 3,
        "converted": 2,
        "conversion": 0.5,
        "revenue": 350.0,
        "customers": 2,
        "lifetime_value": 175.0,
    }
    assert group(attribution["by_source"], "source", "facebook") == {
        "source": "facebook",
        "leads": 3,
        "booked": 2,
        "converted": 0,
        "conversion": 0.0,
        "revenue": 0.0,
        "customers": 0,
        "lifetime_value": None,
    }
    assert group(attribution["by_source"], "source", "referral") == {
        "source": "referral",
        "leads": 0,
        "booked": 0,
        "converted": 0,
        "conversion": None,
        "revenue": 300.0,
        "customers": 2,
        "lifetime_value": 285.0,
    }


def test_retention(known):
    audit, ids = known
    retention = audit["retention"]
    # Visits: c1 1 (the payment two days after the job is its bill), c5 1 (2024,
    # lapsed: more than 365 days before 03-01), c6 1 (two payments within a
    # week of the job), c9 2 (a November payment, a February job).
    assert retention["overall"] == {
        "customers": 4,
        "repeat_customers": 1,
        "repeat_share": 0.25,
        "new_customers": 2,
        "active_customers": 3,
        "lapsed_customers": 1,
        "lapsed_share": 0.25,
    }
    assert [v["customers"] for v in retention["visits"]] == [3, 1, 0, 0]
    # 2024-06-10 15:00 to 2026-03-01 00:00 is 628 days and 9 hours.
    assert retention["lapsed"] == [
        {
            "contact_id": ids["c5"],
            "last_visit_at": "2024-06-10T15:00:00.000000Z",
            "days_since": 628,
            "visits": 1,
            "name": "C5",
        },
    ]
    referral = group(retention["by_source"], "source", "referral")
    assert (referral["customers"], referral["repeat_customers"]) == (2, 1)


def test_findings_are_ranked_with_their_people(known):
    audit, ids = known
    findings = audit["findings"]
    assert [f["kind"] for f in findings] == [
        "funnel_leak",  # 3 people x 1.0 (ties go by kind)
        "unanswered",  # 2 people x 1.5
        "slow_leads",  # web: 2 x 1.2
        "dropped_after_one_touch",  # 2 x 1.0
        "slow_leads",  # facebook: 1 x 1.2 (reminders, 2 x 0.5, come sixth)
    ]
    assert [f["rank"] for f in findings] == [1, 2, 3, 4, 5]
    assert findings[0]["title"] == (
        'Most people stop at "booked" (lead journey): 3 of 5 who got there went '
        "no further"
    )
    assert findings[1]["title"] == (
        "2 conversations are waiting for a reply; the longest for 20 days"
    )
    assert findings[1]["contacts"] == [
        {"id": ids["c3"], "name": "C3"},
        {"id": ids["c4"], "name": "C4"},
    ]
    assert findings[2]["title"] == "50% of web leads waited over an hour"
    assert findings[2]["contact_ids"] == sorted([ids["c2"], ids["c7"]])
    assert findings[4]["title"] == (
        "33% of facebook leads waited over an hour; 1 was never answered"
    )


def test_more_findings_on_request(db, clock, workspace):
    build_known_history(db, clock)
    options = make_options(
        clock=clock, since=SINCE, until=UNTIL, timezone="UTC", top=10
    )
    findings = run_audit(db, options, clock=clock, workspace=workspace)["findings"]
    reminders = findings[5]
    assert reminders["kind"] == "reminders_missing"
    assert reminders["title"] == (
        "Only 50% of appointments had a reminder in the 72 hours before; 2 went without"
    )
    assert reminders["contact_ids"] == sorted([ids_of(db, "c3"), ids_of(db, "c9")])


def ids_of(db, key: str) -> int:
    return db.execute(
        "SELECT id FROM contacts WHERE display_name = ?", [key.title()]
    ).fetchone()[0]


def test_period_bounds_change_the_cohort(db, clock, workspace):
    build_known_history(db, clock)
    options = make_options(
        clock=clock, since="2026-02-15T00:00:00Z", until=UNTIL, timezone="UTC"
    )
    audit = run_audit(db, options, clock=clock, workspace=workspace)
    # Only c4 (02-15), c6, c7, c8 came in from the 15th on.
    assert audit["speed_to_lead"]["overall"]["leads"] == 4
    # c3's conversation went quiet on the 9th: before the period.
    assert audit["unanswered"]["overall"]["conversations"] == 1


def test_an_empty_workspace_audits_to_zeros(db, clock, workspace):
    options = make_options(clock=clock, timezone="UTC")
    audit = run_audit(db, options, clock=clock, workspace=workspace)
    assert audit["speed_to_lead"]["overall"]["leads"] == 0
    assert audit["speed_to_lead"]["overall"]["median_seconds"] is None
    assert audit["funnel"] == {"pipelines": []}
    assert audit["appointments"]["overall"]["no_show_rate"] is None
    assert audit["findings"] == []
