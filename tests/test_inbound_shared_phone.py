"""A household phone: an SMS opt-out from it stops texts to everyone on it.

Carriers keep opt-outs per number, so STOP (or the provider's "unsubscribed
recipient" error) from a number two contacts share must opt out both, cancel
both people's queued texts, and put the opt-out on both timelines.
"""

from __future__ import annotations

import json

import pytest

from cxm_cli.contacts import (
    change_consent,
    consent_status,
    get_contact,
    opt_out_phone,
)
from cxm_cli.inbound import create_minimal_contact, record_inbound, record_status
from cxm_cli.messaging import ConsentRefused, check_consent
from cxm_cli.runner import run_once
from cxm_cli.store import write_transaction

SHARED = "+12025550105"


@pytest.fixture
def household(db, clock):
    """Two contacts on one phone, both enrolled in new-lead by lead.created."""
    with write_transaction(db):
        parent = create_minimal_contact(
            db, clock, email="pat@example.com", phone=SHARED, source="web"
        )
        teen = create_minimal_contact(
            db, clock, email="sam@example.com", phone=SHARED, source="web"
        )
        other = create_minimal_contact(
            db, clock, email="lee@example.com", phone="+12025550177", source="web"
        )
    return parent, teen, other


def pending_sms_steps(db, contact_id) -> int:
    from cxm_cli.dispatch import channel_of
    from cxm_cli.sequences import load_sequences
    from cxm_cli.workspace import workspace_of

    sequences = load_sequences(workspace_of(db)).sequences
    count = 0
    for row in db.query(
        "SELECT sequence, step_index FROM due_steps "
        "WHERE contact_id = ? AND status = 'pending'",
        [contact_id],
    ):
        step = sequences[row["sequence"]].steps[row["step_index"]]
        count += channel_of(step) == "sms"
    return count


def opt_events(db, contact_id, kind="opted_out"):
    return [
        {**row, "data": json.loads(row["data"])}
        for row in db.query(
            "SELECT source, data FROM events WHERE contact_id = ? AND type = ?",
            [contact_id, kind],
        )
    ]


def texts_after(db, contact_id, moment: str) -> int:
    return db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND channel = 'sms' "
        "AND direction = 'outbound' AND at > ?",
        [contact_id, moment],
    ).fetchone()[0]


def test_stop_opts_out_everyone_on_the_phone(workspace, db, clock, household):
    parent, teen, other = household
    assert pending_sms_steps(db, teen) > 0  # the first text is queued

    stop = record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="STOP",
        address=SHARED,
        provider_id="SM-household-1",
        source="twilio",
    )

    assert stop.kind == "opt_out"
    for person in (parent, teen):
        assert consent_status(db, person, "sms") == "opted_out"
        assert pending_sms_steps(db, person) == 0
        (event,) = opt_events(db, person)
        assert event["source"] == "sms_keyword"
        assert event["data"]["phone"] == SHARED
        assert event["data"]["message_id"] == stop.message_id
        assert event["data"]["keyword"] == "STOP"
    assert consent_status(db, other, "sms") is None
    assert any("1 other contact" in action for action in stop.actions)

    for _ in range(5):
        clock.advance(days=1)
        run_once(workspace, db, clock)
    assert texts_after(db, parent, "2000-01-01") == 0
    assert texts_after(db, teen, "2000-01-01") == 0
    assert texts_after(db, other, "2000-01-01") > 0  # the runner did send


def test_reply_to_the_other_person_on_the_phone_is_refused(
    workspace, db, clock, cli, household
):
    parent, teen, _ = household
    record_inbound(
        workspace, db, clock, channel="sms", text="stop", address=SHARED, source="t"
    )
    # Whichever of them the STOP was matched to, neither may be texted now.
    for person in (parent, teen):
        refused = cli("reply", str(person), "--channel", "sms", "--text", "hi")
        assert refused.exit_code != 0
        assert "opted out" in refused.stderr
        assert texts_after(db, person, "2000-01-01") == 0


def test_start_opts_everyone_on_the_phone_back_in(workspace, db, clock, household):
    parent, teen, other = household
    record_inbound(
        workspace, db, clock, channel="sms", text="STOP", address=SHARED, source="t"
    )
    clock.advance(minutes=5)

    start = record_inbound(
        workspace, db, clock, channel="sms", text="UNSTOP", address=SHARED, source="t"
    )

    assert start.kind == "opt_in"
    for person in (parent, teen):
        assert consent_status(db, person, "sms") == "opted_in"
        (event,) = opt_events(db, person, "opted_in")
        assert event["data"]["phone"] == SHARED
        assert event["data"]["message_id"] == start.message_id
    assert consent_status(db, other, "sms") is None


def test_yes_reopts_the_phone_when_the_matched_person_was_not_out(
    workspace, db, clock, household
):
    parent, teen, _ = household
    opt_out_phone(db, SHARED, clock=clock, source="sms_keyword")
    with write_transaction(db):
        # Someone else's consent on the phone changed by hand: still opted out.
        db.execute(
            "UPDATE consents SET status = 'opted_in' WHERE contact_id = ?", [parent]
        )
    yes = record_inbound(
        workspace, db, clock, channel="sms", text="YES", contact_id=parent
    )
    assert yes.kind == "opt_in"
    assert consent_status(db, teen, "sms") == "opted_in"


def test_provider_unsubscribed_error_opts_out_the_whole_phone(
    workspace, db, clock, household
):
    parent, teen, _ = household
    with write_transaction(db):
        message_id = (
            db["messages"]
            .insert(
                {
                    "contact_id": parent,
                    "channel": "sms",
                    "direction": "outbound",
                    "address": SHARED,
                    "body": "Hi",
                    "status": "sent",
                    "provider_id": "SM-out-1",
                    "at": "2026-03-02T15:00:00.000000Z",
                }
            )
            .last_pk
        )

    record_status(
        db,
        clock,
        channel="sms",
        provider_id="SM-out-1",
        status="failed",
        error_code="21610",
    )

    for person in (parent, teen):
        assert consent_status(db, person, "sms") == "opted_out"
        assert pending_sms_steps(db, person) == 0
        (event,) = opt_events(db, person)
        assert event["source"] == "provider"
        assert event["data"]["error_code"] == "21610"
        assert event["data"]["message_id"] == message_id
        assert event["data"]["phone"] == SHARED


def test_opt_out_phone_is_callable_on_its_own(db, clock, household):
    parent, teen, other = household
    cancelled = opt_out_phone(
        db, SHARED, clock=clock, source="provider", detail={"provider_code": "21610"}
    )
    assert sorted(cancelled) == sorted([parent, teen])
    assert all(count > 0 for count in cancelled.values())
    assert consent_status(db, other, "sms") is None
    # Again: nothing changes, nothing is recorded twice.
    opt_out_phone(db, SHARED, clock=clock, source="provider")
    assert len(opt_events(db, teen)) == 1


def test_start_does_not_undo_a_persons_own_opt_out(workspace, db, clock, household):
    parent, teen, _ = household
    change_consent(db, parent, "sms", "opted_out", clock=clock, source="cli")
    record_inbound(
        workspace, db, clock, channel="sms", text="STOP", address=SHARED, source="t"
    )
    record_inbound(workspace, db, clock, channel="sms", text="START", contact_id=teen)
    assert consent_status(db, teen, "sms") == "opted_in"
    assert consent_status(db, parent, "sms") == "opted_out"
    # The parent's own opt-out still holds the number: the teen's consent is
    # back, yet nothing is texted to the phone they share.
    with pytest.raises(ConsentRefused, match=f"shared with contact {parent}"):
        check_consent(db, get_contact(db, teen), "sms")


def test_a_holders_own_opt_out_stops_texts_to_the_shared_number(
    workspace, db, clock, cli, household
):
    parent, teen, other = household
    change_consent(db, parent, "sms", "opted_out", clock=clock, source="cli")

    refused = cli("reply", str(teen), "--channel", "sms", "--text", "hi")

    assert refused.exit_code != 0
    assert f"this number opted out of texts (shared with contact {parent})" in (
        refused.stderr
    )
    assert consent_status(db, teen, "sms") is None
    for _ in range(3):
        clock.advance(days=1)
        run_once(workspace, db, clock)
    assert texts_after(db, parent, "2000-01-01") == 0
    assert texts_after(db, teen, "2000-01-01") == 0
    assert texts_after(db, other, "2000-01-01") > 0
    # Email is the person's own and still reaches the teen.
    sent = cli("reply", str(teen), "--channel", "email", "--text", "hi")
    assert sent.exit_code == 0, sent.stderr


def test_someone_new_on_an_opted_out_phone_is_not_texted(
    workspace, db, clock, household
):
    record_inbound(
        workspace, db, clock, channel="sms", text="STOP", address=SHARED, source="t"
    )
    with write_transaction(db):
        newcomer = create_minimal_contact(
            db, clock, email="kim@example.com", phone=SHARED, source="web"
        )

    assert consent_status(db, newcomer, "sms") == "opted_out"
    (event,) = opt_events(db, newcomer)
    assert event["source"] == "shared_phone" and event["data"]["phone"] == SHARED
    run_once(workspace, db, clock)
    assert texts_after(db, newcomer, "2000-01-01") == 0
