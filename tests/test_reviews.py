"""Review requests: platforms, eligibility rules, the guard delay, answers.

Each rule (cool-down, lifetime cap, opt-out, guard delay) has a test that
fails without it; the no-gating rule is checked from both ends: a previous
low score never stops an ask, and every score is met with the public links.
"""

from __future__ import annotations

import pytest

from cxm_cli.contacts import set_consent
from cxm_cli.errors import ConfigError
from cxm_cli.events import record_event
from cxm_cli.reviews.answers import record_rating
from cxm_cli.reviews.platforms import choose_platforms, load_platforms
from cxm_cli.reviews.ratings import parse_rating
from cxm_cli.reviews.requests import check_eligibility, request_review
from cxm_cli.steps import STEP_KINDS, StepContext
from cxm_cli.store import loads
from tests.support.fixtures import make_contact, update_settings

PLACE_ID = "ChIJtestPlace123"
GOOGLE_LINK = f"https://search.google.com/local/writereview?placeid={PLACE_ID}"
GOOGLE = {"kind": "google", "place_id": PLACE_ID}


def configure(workspace, **settings):
    values = {"reviews.platforms": [GOOGLE], **settings}
    return update_settings(workspace, values)


def outbound(db, contact_id, channel=None):
    sql = "SELECT * FROM messages WHERE contact_id = ? AND direction = 'outbound'"
    params = [contact_id]
    if channel:
        sql += " AND channel = ?"
        params.append(channel)
    return list(db.query(sql + " ORDER BY id", params))


def event_types(db, contact_id):
    return [
        row["type"]
        for row in db.query(
            "SELECT type FROM events WHERE contact_id = ? ORDER BY id", [contact_id]
        )
    ]


# ---------------------------------------------------------------- platforms


def test_platform_links_are_built_and_yelp_is_refused_with_its_reason(workspace):
    workspace = configure(
        workspace,
        **{
            "reviews.platforms": [
                GOOGLE,
                {"kind": "facebook", "page": "brightsmile"},
                {
                    "kind": "custom",
                    "name": "Healthgrades",
                    "url": "https://hg.example/r",
                },
                {"kind": "yelp", "url": "https://www.yelp.com/writeareview/biz/x"},
            ]
        },
    )
    platforms = {p.key: p for p in load_platforms(workspace)}

    assert platforms["google"].url == GOOGLE_LINK
    assert platforms["facebook"].url == "https://www.facebook.com/brightsmile/reviews"
    assert platforms["healthgrades"].usable
    assert not platforms["yelp"].usable
    assert "forbids" in platforms["yelp"].refused


def test_a_custom_link_to_yelp_is_refused_too(workspace):
    workspace = configure(
        workspace,
        **{
            "reviews.platforms": [
                {"kind": "custom", "name": "Y", "url": "https://m.yelp.com/biz/x"}
            ]
        },
    )
    with pytest.raises(ConfigError, match="Yelp forbids"):
        choose_platforms(workspace, workspace.open_db())


def test_yelp_only_workspace_refuses_requests_and_says_why(cli, workspace, db, clock):
    configure(
        workspace,
        **{"reviews.platforms": [{"kind": "yelp", "url": "https://yelp.com/b"}]},
    )
    contact_id = make_contact(db, clock)

    result = cli("reviews", "request", str(contact_id))

    assert result.exit_code != 0
    assert "Yelp forbids" in result.stderr
    assert outbound(db, contact_id) == []


def test_round_robin_rotation_offers_each_platform_in_turn(workspace, db, clock):
    workspace = configure(
        workspace,
        **{
            "reviews.rotation": "round_robin",
            "reviews.platforms": [GOOGLE, {"kind": "facebook", "page": "bright"}],
        },
    )
    offered = []
    for index in range(4):
        contact_id = make_contact(
            db, clock, email=f"p{index}@example.com", phone=f"+1512555020{index}"
        )
        outcome = request_review(workspace, db, clock, contact_id)
        assert outcome.status == "sent"
        offered.append([p["key"] for p in outcome.platforms])

    assert offered == [["google"], ["facebook"], ["google"], ["facebook"]]


# ---------------------------------------------------------------- ratings


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("5", 5),
        (" 4! ", 4),
        ("3/5", 3),
        ("five", 5),
        ("Two stars", 2),
        ("★★★★", 4),
        ("★★★☆☆", 3),
        ("⭐⭐⭐⭐⭐", 5),
        ("5 ⭐", 5),
        ("4️⃣", 4),
        ("👍", 5),
        ("👎", 1),
        ("I'd give you a 4", 4),
        ("4 out of 5", 4),
        ("10/10", 5),
        ("0", None),
        ("7", None),
        ("1 or 2", None),
        ("STOP", None),
        ("Thanks!", None),
        ("no one called me back after my visit at 5 and I waited", None),
    ],
)
def test_replies_are_read_as_ratings(text, rating):
    assert parse_rating(text) == rating


# ---------------------------------------------------------------- the rules


def test_request_offers_the_public_link_and_is_on_the_timeline(workspace, db, clock):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)

    outcome = request_review(workspace, db, clock, contact_id)

    assert outcome.status == "sent" and outcome.channel == "sms"
    [message] = outbound(db, contact_id)
    assert GOOGLE_LINK in message["body"]
    assert "1" in message["body"] and "5" in message["body"]
    assert "review.requested" in event_types(db, contact_id)


def test_cool_down_stops_a_second_ask_until_it_has_passed(workspace, db, clock):
    workspace = configure(workspace, **{"reviews.lifetime_cap": 0})
    contact_id = make_contact(db, clock)
    assert request_review(workspace, db, clock, contact_id).status == "sent"

    clock.advance(days=89)
    again = request_review(workspace, db, clock, contact_id)
    assert again.status == "skipped"
    assert "cool-down" in again.reason
    assert len(outbound(db, contact_id)) == 1

    clock.advance(days=2)
    assert request_review(workspace, db, clock, contact_id).status == "sent"
    assert len(outbound(db, contact_id)) == 2


def test_lifetime_cap_stops_asking_for_good(workspace, db, clock):
    workspace = configure(
        workspace, **{"reviews.cooldown_days": 0, "reviews.lifetime_cap": 2}
    )
    contact_id = make_contact(db, clock)

    statuses = []
    for _ in range(3):
        statuses.append(request_review(workspace, db, clock, contact_id).status)
        clock.advance(days=400)

    assert statuses == ["sent", "sent", "skipped"]
    assert len(outbound(db, contact_id)) == 2
    reason = db.execute(
        "SELECT reason FROM review_requests WHERE status = 'skipped'"
    ).fetchone()[0]
    assert "lifetime cap" in reason


def test_opted_out_channel_is_never_used_the_next_one_is(workspace, db, clock):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)
    set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="test")

    outcome = request_review(workspace, db, clock, contact_id)

    assert outcome.status == "sent" and outcome.channel == "email"
    assert outbound(db, contact_id, "sms") == []
    assert len(outbound(db, contact_id, "email")) == 1


def test_contact_opted_out_everywhere_is_not_asked(workspace, db, clock):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock, email=None)
    set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="test")

    outcome = request_review(workspace, db, clock, contact_id, channel="sms")

    assert outcome.status == "skipped"
    assert "opted out" in outcome.reason
    assert outbound(db, contact_id) == []


def test_a_previous_low_score_never_stops_the_next_ask(workspace, db, clock):
    """No gating: eligibility is blind to ratings."""
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)
    first = request_review(workspace, db, clock, contact_id)
    record_rating(workspace, db, clock, first.request_id, 1, via="web")

    clock.advance(days=91)
    assert check_eligibility(workspace, db, clock, contact_id).ok
    second = request_review(workspace, db, clock, contact_id)

    assert second.status == "sent"
    assert GOOGLE_LINK in outbound(db, contact_id)[-1]["body"]


def test_a_segment_chosen_by_rating_is_refused_as_gating(cli, workspace, db, clock):
    configure(workspace)
    make_contact(db, clock)

    result = cli("reviews", "request", "--segment", "unhappy-customer")

    assert result.exit_code != 0
    assert "gating" in result.stderr


# ---------------------------------------------------------------- the guard


def run_step(workspace, db, clock, contact_id, job_event):
    context = StepContext(
        db=db,
        workspace=workspace,
        clock=clock,
        contact={"id": contact_id},
        enrollment={
            "sequence": "review-request",
            "trigger_event_id": job_event.id,
            "trigger_type": job_event.type,
        },
        step={"kind": "review_request", "review_request": "auto"},
    )
    return STEP_KINDS["review_request"].run(context)


def test_guard_delay_defers_then_sends(workspace, db, clock):
    workspace = configure(workspace, **{"reviews.guard_delay_hours": 24})
    contact_id = make_contact(db, clock)
    job = record_event(db, contact_id, "appointment.completed", clock=clock)
    scheduled = db.execute(
        "SELECT status, due_at FROM review_requests WHERE contact_id = ?", [contact_id]
    ).fetchone()
    assert scheduled[0] == "scheduled"

    clock.advance(hours=2)
    early = run_step(workspace, db, clock, contact_id, job)
    assert early.status == "deferred"
    assert outbound(db, contact_id) == []

    clock.advance(hours=23)
    outcome = run_step(workspace, db, clock, contact_id, job)
    assert outcome.status == "done"
    assert len(outbound(db, contact_id)) == 1
    [row] = db.query("SELECT status, trigger_type FROM review_requests")
    assert row == {"status": "sent", "trigger_type": "appointment.completed"}


def test_refund_during_the_guard_delay_stops_the_request(workspace, db, clock):
    workspace = configure(workspace, **{"reviews.guard_delay_hours": 24})
    contact_id = make_contact(db, clock)
    job = record_event(
        db,
        contact_id,
        "invoice.paid",
        clock=clock,
        data={"amount": 120, "invoice_id": "A1"},
    )

    clock.advance(hours=3)
    record_event(
        db,
        contact_id,
        "invoice.refunded",
        clock=clock,
        data={"amount": 120, "invoice_id": "A1"},
    )
    clock.advance(hours=30)
    outcome = run_step(workspace, db, clock, contact_id, job)

    assert outcome.status == "skipped"
    assert "invoice.refunded" in outcome.detail
    assert outbound(db, contact_id) == []
    [row] = db.query("SELECT status, reason FROM review_requests")
    assert row["status"] == "cancelled"


def test_refund_of_another_invoice_does_not_stop_the_request(workspace, db, clock):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)
    job = record_event(
        db, contact_id, "invoice.paid", clock=clock, data={"invoice_id": "A1"}
    )
    clock.advance(hours=1)
    record_event(
        db, contact_id, "invoice.refunded", clock=clock, data={"invoice_id": "Z9"}
    )
    clock.advance(hours=30)

    assert run_step(workspace, db, clock, contact_id, job).status == "done"


def test_send_due_sends_guarded_requests_without_a_sequence(cli, workspace, db, clock):
    workspace = configure(workspace, **{"reviews.guard_delay_hours": 6})
    contact_id = make_contact(db, clock)
    record_event(db, contact_id, "appointment.completed", clock=clock)

    assert cli("reviews", "send-due").exit_code == 0
    assert outbound(db, contact_id) == []

    clock.advance(hours=7)
    result = cli("reviews", "send-due", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["status"] for r in result.json()["requests"]] == ["sent"]
    assert len(outbound(db, contact_id)) == 1


def test_step_run_twice_for_one_due_step_asks_once(workspace, db, clock):
    workspace = configure(workspace, **{"reviews.guard_delay_hours": 0})
    contact_id = make_contact(db, clock)
    first = request_review(workspace, db, clock, contact_id, due_step_id=77)
    again = request_review(workspace, db, clock, contact_id, due_step_id=77)

    assert (first.status, again.status) == ("sent", "already_sent")
    assert len(outbound(db, contact_id)) == 1


def test_quiet_hours_defer_the_ask_without_recording_a_decision(workspace, db, clock):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)
    clock.set("2026-03-03T05:00:00Z")  # 23:00 in Austin

    outcome = request_review(workspace, db, clock, contact_id)

    assert outcome.status == "deferred" and outcome.retry_at is not None
    assert outbound(db, contact_id) == []
    assert list(db.query("SELECT id FROM review_requests")) == []


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_every_web_score_is_recorded_and_low_ones_alert(workspace, db, clock, score):
    workspace = configure(workspace)
    contact_id = make_contact(db, clock)
    outcome = request_review(workspace, db, clock, contact_id)

    rating = record_rating(workspace, db, clock, outcome.request_id, score, via="web")

    assert rating.public_links == [
        {"key": "google", "name": "Google", "url": GOOGLE_LINK}
    ]
    assert rating.low == (score <= 3)
    types = event_types(db, contact_id)
    assert "review.rated" in types
    assert ("staff.alerted" in types) == (score <= 3)
    rated = [
        loads(r["data"])
        for r in db.query("SELECT data FROM events WHERE type = 'review.rated'")
    ]
    assert rated == [{"request_id": outcome.request_id, "rating": score, "via": "web"}]


# ---------------------------------------------------------------- the engine


def test_shipped_sequence_asks_after_the_guard_and_a_refund_stops_it(
    workspace, db, clock
):
    from cxm_cli.runner import run_once

    workspace = configure(workspace, **{"reviews.guard_delay_hours": 24})
    paid = make_contact(db, clock)
    refunded = make_contact(db, clock, email="r@example.com", phone="+15125550199")
    for contact_id in (paid, refunded):
        record_event(
            db,
            contact_id,
            "invoice.paid",
            clock=clock,
            data={"invoice_id": f"I{contact_id}"},
        )

    run_once(workspace, db, clock)
    assert outbound(db, paid) == [] and outbound(db, refunded) == []

    clock.advance(hours=5)
    record_event(
        db,
        refunded,
        "invoice.refunded",
        clock=clock,
        data={"invoice_id": f"I{refunded}"},
    )
    clock.advance(hours=20)
    run_once(workspace, db, clock)

    assert len(outbound(db, paid)) == 1
    assert GOOGLE_LINK in outbound(db, paid)[0]["body"]
    assert outbound(db, refunded) == []
    statuses = dict(
        db.execute("SELECT contact_id, status FROM review_requests").fetchall()
    )
    assert statuses == {paid: "sent", refunded: "cancelled"}


def test_step_without_any_platform_is_skipped_at_once(workspace, db, clock):
    contact_id = make_contact(db, clock)
    job = record_event(db, contact_id, "appointment.completed", clock=clock)

    outcome = run_step(workspace, db, clock, contact_id, job)

    assert outcome.status == "skipped"
    assert "no review platform" in outcome.detail
    assert list(db.query("SELECT id FROM review_requests")) == []
