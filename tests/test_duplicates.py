"""`cxm contacts duplicates` and `cxm contacts merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxm_cli.contacts import consent_status, set_consent
from cxm_cli.engine import exit_enrollment
from cxm_cli.errors import CxmError
from cxm_cli.events import record_event
from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.duplicates import (
    email_alias_key,
    find_duplicates,
    merge_contacts,
)
from cxm_cli.preview import preview_due
from tests.support.engine import emit, only_sequences, timeline
from tests.support.fixtures import make_contact


def load(workspace, db, clock, tmp_path: Path, text: str):
    path = tmp_path / "leads.csv"
    path.write_text(text, encoding="utf-8")
    options = ImportOptions(rejects_path=tmp_path / "r.csv")
    return import_file(workspace, db, path, clock=clock, options=options)


def test_email_alias_key():
    assert email_alias_key("Jo.Ann+spam@gmail.com") == "joann@gmail.com"
    assert email_alias_key("jo.ann@googlemail.com") == "joann@gmail.com"
    assert email_alias_key("lena.vogel+offers@example.com") == "lena.vogel@example.com"
    assert email_alias_key("lena.vogel@example.com") == "lena.vogel@example.com"


def test_finds_flagged_alias_and_near_phone_pairs(workspace, db, clock, tmp_path):
    load(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone\n"
        "Daniel Kim,daniel.kim@example.com,(202) 555-0105\n"
        "Sofia Kim,sofia.kim@example.org,(202) 555-0105\n"
        "Jo Ann,jo.ann@gmail.com,\n"
        "Jo Ann,joann+promo@gmail.com,\n"
        "Mia Novak,mia@example.com,(415) 555-0120\n"
        "Mia Novak,mia.novak@example.org,(415) 555-0121\n"
        "Other Person,other@example.com,(415) 555-0129\n",
    )
    pairs = {(r["name_a"], r["name_b"], r["reason"]) for r in find_duplicates(db)}
    assert pairs == {
        ("Daniel Kim", "Sofia Kim", "shared phone, different emails"),
        ("Jo Ann", "Jo Ann", "email aliases of joann@gmail.com"),
        ("Mia Novak", "Mia Novak", "same name, near-identical phone"),
    }


def test_merge_keeps_every_event_identifier_and_opt_out(workspace, db, clock, tmp_path):
    load(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone,Tags\n"
        "Mia Novak,mia@example.com,(415) 555-0120,vip\n"
        "MIA NOVAK,mia.novak@example.org,(415) 555-0121,spring\n",
    )
    record_event(db, 2, "message.received", clock=clock, data={"channel": "sms"})
    db.execute(
        "INSERT INTO consents (contact_id, channel, status, source, changed_at)"
        " VALUES (2, 'email', 'opted_out', 'test', '2026-03-01T00:00:00.000000Z')"
    )
    events_before = {r[0] for r in db.execute("SELECT id FROM events")}

    merged = merge_contacts(db, 1, 2, clock=clock)

    assert merged["display_name"] == "Mia Novak"
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 1
    emails = [r[0] for r in db.execute("SELECT email FROM contact_emails ORDER BY id")]
    assert emails == ["mia@example.com", "mia.novak@example.org"]
    phones = {r[0] for r in db.execute("SELECT phone FROM contact_phones")}
    assert phones == {"+14155550120", "+14155550121"}
    assert {r[0] for r in db.execute("SELECT tag FROM contact_tags")} == {
        "vip",
        "spring",
    }
    assert consent_status(db, 1, "email") == "opted_out"
    types = [r[0] for r in db.execute("SELECT type FROM events WHERE contact_id = 1")]
    assert "message.received" in types and types[-1] == "contact.merged"
    after = {r[0]: r[1] for r in db.execute("SELECT id, type FROM events")}
    assert events_before <= set(after)
    # New: the merge itself, and Mia's new-lead stopped by the reply to the
    # other record (finding 6) with its queued step.
    assert sorted(after[i] for i in set(after) - events_before) == [
        "contact.merged",
        "sequence.exited",
        "step.cancelled",
    ]
    data = json.loads(
        db.execute("SELECT data FROM events WHERE type = 'contact.merged'").fetchone()[
            0
        ]
    )
    assert data["merged_contact"] == 2 and data["emails"] == ["mia.novak@example.org"]
    assert find_duplicates(db) == []


def test_merge_into_itself_is_refused(db, clock):
    with pytest.raises(CxmError, match="into itself"):
        merge_contacts(db, 1, 1, clock=clock)


def test_cli_duplicates_and_merge(cli, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(
        "Name,Email,Phone\n"
        "Daniel Kim,daniel.kim@example.com,(202) 555-0105\n"
        "Sofia Kim,sofia.kim@example.org,(202) 555-0105\n",
        encoding="utf-8",
    )
    assert cli("leads", "import", str(path)).exit_code == 0
    listed = cli("contacts", "duplicates", "--json").json()
    assert [(r["contact_a"], r["contact_b"]) for r in listed] == [(1, 2)]
    result = cli("contacts", "merge", "daniel.kim@example.com", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["id"] == 1
    assert cli("contacts", "duplicates", "--json").json() == []


FOLLOW_UP = """
trigger: lead.created
steps:
  - wait: 1d
  - send: sms
    template: nudge-text
"""


def _enrollments(db) -> list[tuple]:
    return [
        tuple(row)
        for row in db.execute(
            "SELECT contact_id, sequence, status, end_reason FROM enrollments"
            " ORDER BY id"
        )
    ]


def test_merge_does_not_restart_a_sequence_the_kept_contact_left(workspace, db, clock):
    # Finding 4: Pat and Sam share a phone; Pat replied STOP, which ended her
    # new-lead; merging Sam into Pat must not bring it back.
    only_sequences(workspace, new_lead=FOLLOW_UP)
    pat = make_contact(db, clock, first_name="Pat", email="pat@example.com")
    sam = make_contact(db, clock, first_name="Sam", email="sam@example.com")
    emit(db, clock, pat, "lead.created")
    emit(db, clock, sam, "lead.created")
    [pats] = db.query("SELECT * FROM enrollments WHERE contact_id = ?", [pat])
    exit_enrollment(db, pats, clock=clock, reason="replied STOP")
    set_consent(db, pat, "sms", "opted_out", clock=clock, source="test")
    set_consent(db, sam, "sms", "opted_in", clock=clock, source="test")

    merge_contacts(db, pat, sam, clock=clock)

    reason = f"merged into contact {pat}, who was already in this sequence"
    assert _enrollments(db) == [
        (pat, "new-lead", "exited", "replied STOP"),
        (pat, "new-lead", "exited", reason),
    ]
    live = "SELECT COUNT(*) FROM due_steps WHERE status IN ('pending', 'claimed')"
    assert db.execute(live).fetchone()[0] == 0
    clock.advance(days=2)
    assert preview_due(workspace, db, clock, contact_id=pat) == []
    ended = [
        d for t, d in timeline(db, pat) if t in ("sequence.exited", "step.cancelled")
    ]
    assert [d["reason"] for d in ended][-2:] == [reason, reason]
    assert consent_status(db, pat, "sms") == "opted_out"
    [merged] = [d for t, d in timeline(db, pat) if t == "contact.merged"]
    assert merged["exited_sequences"] == ["new-lead"]


def test_merge_moves_a_sequence_only_the_merged_contact_is_in(workspace, db, clock):
    only_sequences(workspace, new_lead=FOLLOW_UP, other=FOLLOW_UP)
    pat = make_contact(db, clock, first_name="Pat", email="pat@example.com")
    sam = make_contact(db, clock, first_name="Sam", email="sam@example.com")
    emit(db, clock, pat, "lead.created")
    emit(db, clock, sam, "lead.created")
    db.execute(
        "UPDATE enrollments SET status = 'completed' WHERE contact_id = ?"
        " AND sequence = 'new-lead'",
        [pat],
    )
    db.execute(
        "DELETE FROM due_steps WHERE contact_id = ? AND sequence = 'new-lead'", [pat]
    )
    db.conn.commit()

    merge_contacts(db, pat, sam, clock=clock)

    # Pat finished new-lead: Sam's is not restarted. Both were active in
    # other: Pat's goes on, Sam's is kept as history (it used to vanish).
    reason = f"merged into contact {pat}, who was already in this sequence"
    assert sorted(_enrollments(db)) == sorted(
        [
            (pat, "new-lead", "completed", None),
            (pat, "other", "active", None),
            (pat, "new-lead", "exited", reason),
            (pat, "other", "exited", reason),
        ]
    )
    live = db.execute(
        "SELECT d.contact_id, d.sequence FROM due_steps d JOIN enrollments e"
        " ON e.id = d.enrollment_id WHERE d.status = 'pending'"
        " AND e.status = 'active'"
    ).fetchall()
    assert [tuple(row) for row in live] == [(pat, "other")]

    # A sequence the kept contact never joined moves over and carries on.
    only_sequences(workspace, new_lead=FOLLOW_UP, other=FOLLOW_UP, third=FOLLOW_UP)
    ana = make_contact(db, clock, first_name="Ana", email="ana@example.com")
    bea = make_contact(db, clock, first_name="Bea", email="bea@example.com")
    emit(db, clock, bea, "lead.created")
    merge_contacts(db, ana, bea, clock=clock)
    statuses = db.execute(
        "SELECT sequence, status FROM enrollments WHERE contact_id = ? ORDER BY id",
        [ana],
    ).fetchall()
    assert [tuple(row) for row in statuses] == [
        ("new-lead", "active"),
        ("other", "active"),
        ("third", "active"),
    ]


def _new_lead(db, contact_id) -> tuple:
    return tuple(
        db.execute(
            "SELECT status, end_reason FROM enrollments WHERE contact_id = ?"
            " AND sequence = 'new-lead' ORDER BY id",
            [contact_id],
        ).fetchone()
    )


def test_a_reply_under_the_merged_record_stops_the_kept_ones_follow_up(
    workspace, db, clock, tmp_path
):
    # Finding 6: Ann and Zed share a phone; Zed replied, which ended his
    # new-lead; after the merge Ann's must not nudge the person who answered.
    from tests.support.engine import outbound, run

    load(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone\n"
        "Ann Lee,ann@example.com,(312) 555-0101\n"
        "Zed Lee,zed@example.com,(312) 555-0101\n",
    )
    ids = {r[1]: r[0] for r in db.execute("SELECT id, email FROM contacts")}
    ann, zed = ids["ann@example.com"], ids["zed@example.com"]
    run(workspace, db, clock)
    clock.advance(hours=2)
    reply = record_event(
        db,
        zed,
        "message.received",
        clock=clock,
        data={"channel": "sms", "text": "yes please call me"},
    )
    assert _new_lead(db, zed) == ("exited", "replied")
    assert _new_lead(db, ann) == ("active", None)
    [anns] = db.execute(
        "SELECT id FROM enrollments WHERE contact_id = ? AND status = 'active'", [ann]
    ).fetchone()

    merge_contacts(db, ann, zed, clock=clock)

    assert _new_lead(db, ann) == ("exited", "replied")
    [exited] = [
        d
        for t, d in timeline(db, ann)
        if t == "sequence.exited" and d["enrollment_id"] == anns
    ]
    assert exited["reason"] == "replied"
    assert exited["event_id"] == reply.id
    sent_before = len(outbound(db, ann))  # both records' first messages
    clock.advance(days=4)
    assert preview_due(workspace, db, clock, contact_id=ann) == []
    run(workspace, db, clock)
    assert len(outbound(db, ann)) == sent_before


def test_merge_applies_exit_rules_both_ways_and_only_after_enrolment(
    workspace, db, clock
):
    only_sequences(workspace, new_lead=FOLLOW_UP + "exit:\n  - replied\n")
    pat = make_contact(db, clock, first_name="Pat", email="pat@example.com")
    sam = make_contact(db, clock, first_name="Sam", email="sam@example.com")
    # Pat's reply came before Sam's enrolment: it does not stop Sam's.
    record_event(db, pat, "message.received", clock=clock, data={"channel": "sms"})
    clock.advance(minutes=5)
    emit(db, clock, sam, "lead.created")
    merge_contacts(db, pat, sam, clock=clock)
    assert _enrollments(db) == [(pat, "new-lead", "active", None)]

    # Now the other way round: Ana (kept) replied after Bea (merged) enrolled.
    ana = make_contact(db, clock, first_name="Ana", email="ana@example.com")
    bea = make_contact(db, clock, first_name="Bea", email="bea@example.com")
    emit(db, clock, bea, "lead.created")
    clock.advance(minutes=5)
    record_event(db, ana, "message.received", clock=clock, data={"channel": "sms"})
    merge_contacts(db, ana, bea, clock=clock)
    assert _enrollments(db)[-1] == (ana, "new-lead", "exited", "replied")
