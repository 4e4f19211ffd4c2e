"""Batches: listing, undo, and atomicity of an interrupted import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxm_cli.errors import CxmError
from cxm_cli.events import record_event
from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.batches import list_batches, undo_batch
from tests.conftest import CORPUS_DIR, REPO_DIR


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def state(db) -> dict:
    """Everything an import touches, to compare before and after."""
    tables = {
        "contacts": "SELECT id, display_name, first_name, last_name, company, email,"
        " phone, source, custom FROM contacts ORDER BY id",
        "emails": "SELECT contact_id, email, is_primary FROM contact_emails"
        " ORDER BY id",
        "phones": "SELECT contact_id, phone, is_primary FROM contact_phones"
        " ORDER BY id",
        "tags": "SELECT contact_id, tag FROM contact_tags ORDER BY contact_id, tag",
        "consents": "SELECT contact_id, channel, status FROM consents ORDER BY 1, 2",
    }
    return {name: list(db.query(sql)) for name, sql in tables.items()}


def run(workspace, db, clock, path, **options):
    options.setdefault("rejects_path", Path(path).with_suffix(".rejects.csv"))
    return import_file(
        workspace, db, path, clock=clock, options=ImportOptions(**options)
    )


def test_undo_removes_created_and_reverts_changed(workspace, db, clock, tmp_path):
    first = write(
        tmp_path / "a.csv",
        "Email,First Name,Phone,Tags\nana@example.com,Ana,,vip\nbo@example.com,Bo,,\n",
    )
    second = write(
        tmp_path / "b.csv",
        "Email,First Name,Last Name,Phone,Tags\n"
        "ana@example.com,ANA,Lima,(312) 555-0116,spring\n"
        "new@example.com,New,Person,,\n",
    )
    run(workspace, db, clock, first)
    before = state(db)
    summary = run(workspace, db, clock, second)
    assert (summary.created, summary.updated) == (1, 1)
    assert state(db) != before

    result = undo_batch(db, summary.batch_id, clock=clock)
    assert (result.removed_contacts, result.reverted_contacts) == (1, 1)
    assert state(db) == before
    assert [b["status"] for b in list_batches(db)] == ["undone", "complete"]
    timeline = [
        r["type"] for r in db.query("SELECT type FROM events WHERE contact_id = 1")
    ]
    assert "contact.merged" not in timeline and timeline[-1] == "contact.updated"

    with pytest.raises(CxmError, match="is undone"):
        undo_batch(db, summary.batch_id, clock=clock)


def test_undone_batch_can_be_imported_again(workspace, db, clock, tmp_path):
    path = write(tmp_path / "a.csv", "Email\nana@example.com\n")
    summary = run(workspace, db, clock, path)
    undo_batch(db, str(summary.batch_id), clock=clock)
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0
    assert run(workspace, db, clock, path).created == 1


def test_undo_refuses_where_later_activity_depends_on_it(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "a.csv", "Email\nana@example.com\nbo@example.com\n")
    summary = run(workspace, db, clock, path)
    ana = db.execute(
        "SELECT contact_id FROM contact_emails WHERE email = 'ana@example.com'"
    ).fetchone()[0]
    clock.advance(minutes=5)
    record_event(db, ana, "message.received", clock=clock, data={"channel": "sms"})

    with pytest.raises(CxmError, match=rf"contact {ana}: later activity"):
        undo_batch(db, summary.batch_id, clock=clock)
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 2

    result = undo_batch(db, summary.batch_id, clock=clock, keep_blocked=True)
    assert result.removed_contacts == 1
    assert [k["contact_id"] for k in result.kept] == [ana]
    assert [r[0] for r in db.execute("SELECT id FROM contacts")] == [ana]


def test_undo_refuses_a_field_changed_since(workspace, db, clock, tmp_path):
    run(workspace, db, clock, write(tmp_path / "a.csv", "Email\nana@example.com\n"))
    summary = run(
        workspace,
        db,
        clock,
        write(tmp_path / "b.csv", "Email,Company\nana@example.com,Lima Bakery\n"),
    )
    db.execute("UPDATE contacts SET company = 'Changed by hand'")
    with pytest.raises(CxmError, match="company changed since the import"):
        undo_batch(db, summary.batch_id, clock=clock)


OPT_OUT_KEPT = "opted out: an undo never removes an opt-out"


def opted_out(db, channel: str) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "SELECT e.email FROM consents c JOIN contact_emails e"
            " ON e.contact_id = c.contact_id WHERE c.channel = ?"
            " AND c.status = 'opted_out' ORDER BY e.email",
            [channel],
        )
    ]


@pytest.mark.skipif(not CORPUS_DIR.is_dir(), reason="needs the shared corpus")
def test_undo_never_removes_a_mailchimp_unsubscribe(workspace, db, clock, tmp_path):
    path = CORPUS_DIR / "08b-mailchimp-unsubscribed_members_export.csv"
    rejects = tmp_path / "rejects.csv"
    summary = run(workspace, db, clock, path, rejects_path=rejects)
    unsubscribed = opted_out(db, "email")
    assert len(unsubscribed) == 3

    result = undo_batch(db, summary.batch_id, clock=clock)

    assert result.removed_contacts == 0
    assert [k["reason"] for k in result.kept] == [OPT_OUT_KEPT] * 3
    assert opted_out(db, "email") == unsubscribed
    # Importing the list again finds the opt-outs still there.
    again = run(workspace, db, clock, path, rejects_path=rejects)
    assert again.created == 0


def test_undo_keeps_contacts_an_opt_out_column_opted_out(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "a.csv",
        "Email,Do Not Text\nana@example.com,yes\nbo@example.com,no\n",
    )
    summary = run(workspace, db, clock, path)

    result = undo_batch(db, summary.batch_id, clock=clock)

    assert result.removed_contacts == 1
    ana = db.execute("SELECT id FROM contacts").fetchall()
    assert [k["contact_id"] for k in result.kept] == [ana[0][0]]
    assert opted_out(db, "sms") == ["ana@example.com"]
    assert [b["status"] for b in list_batches(db)] == ["undone"]


def test_undo_keeps_a_bouncing_address_from_a_cleaned_list(
    workspace, db, clock, tmp_path
):
    path = REPO_DIR / "tests" / "fixtures" / "imports" / "mailchimp-cleaned.csv"
    summary = run(workspace, db, clock, path, rejects_path=tmp_path / "r.csv")
    assert summary.created > 0

    result = undo_batch(db, summary.batch_id, clock=clock)

    assert result.removed_contacts == 0 and len(result.kept) == summary.created
    assert {k["reason"] for k in result.kept} == {
        "address bouncing: an undo never removes a suppression"
    }


def test_cli_undo_says_which_opt_outs_it_kept(cli, tmp_path):
    path = write(tmp_path / "a.csv", "Email,Opt Out\nana@example.com,Opted Out\n")
    assert cli("leads", "import", str(path)).exit_code == 0

    result = cli("leads", "undo", "1")

    assert result.exit_code == 0
    assert f"kept contact 1: {OPT_OUT_KEPT}" in result.stderr
    data = cli("leads", "undo", "1", "--json")
    assert data.exit_code == 1  # already undone; the contact stays
    assert len(cli("contacts", "list", "--json").json()) == 1


def test_unknown_batch(db, clock):
    with pytest.raises(CxmError, match="no import batch 42"):
        undo_batch(db, "42", clock=clock)
    with pytest.raises(CxmError, match="not a batch id"):
        undo_batch(db, "abc", clock=clock)


def test_cli_batches_and_undo(cli, tmp_path):
    path = write(tmp_path / "a.csv", "Email\nana@example.com\n")
    assert cli("leads", "import", str(path)).exit_code == 0
    batches = cli("leads", "batches", "--json").json()
    assert [(b["id"], b["created"], b["status"]) for b in batches] == [
        (1, 1, "complete")
    ]
    result = cli("leads", "undo", "1", "--json")
    assert result.exit_code == 0 and result.json()["removed_contacts"] == 1
    again = cli("leads", "undo", "1")
    assert again.exit_code == 1 and "nothing to undo" in again.stderr


def _big_google_export(path: Path, rows: int) -> None:
    header = "First Name,Last Name,Labels,E-mail 1 - Value,Phone 1 - Value\n"
    with path.open("w", encoding="utf-8") as out:
        out.write(header)
        out.write("No,Identifier,* myContacts,,\n")  # rejected at once
        for index in range(rows):
            out.write(
                f"Person{index},Test,* myContacts,p{index}@example.com,"
                f"(312) 555-{index % 100:04d}\n"
            )


@pytest.mark.slow
def test_killed_import_leaves_the_workspace_unchanged(workspace, tmp_path):
    db = workspace.open_db()
    before = state(db)
    batches_before = db.execute("SELECT COUNT(*) FROM import_batches").fetchone()[0]
    db.close()

    source = tmp_path / "big.csv"
    _big_google_export(source, 20_000)
    env = {**os.environ, "CXM_WORKSPACE": str(workspace.root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cxm_cli", "leads", "import", str(source)],
        env=env,
        cwd=REPO_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The rejects file's temporary copy appears once rows are being applied.
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.rejects.csv.*.tmp")):
        assert process.poll() is None, "import finished before it could be killed"
        assert time.monotonic() < deadline, "import never started"
        time.sleep(0.01)
    time.sleep(0.3)
    assert process.poll() is None, "import finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    db = workspace.open_db()
    assert state(db) == before
    assert (
        db.execute("SELECT COUNT(*) FROM import_batches").fetchone()[0]
        == batches_before
    )
    assert not (tmp_path / "big.rejects.csv").exists()
    db.close()


# ------------------------------------------- what later activity blocks an undo


def contact_id_of(db, email: str) -> int:
    return db.execute(
        "SELECT contact_id FROM contact_emails WHERE email = ?", [email]
    ).fetchone()[0]


def test_undo_batch_two_then_batch_one(workspace, db, clock, tmp_path):
    first = write(tmp_path / "a1.csv", "Email,Name\nana@example.com,Ana\n")
    second = write(
        tmp_path / "a2.csv",
        "Email,Name,Company\nana@example.com,Ana,Lima Bakery\nbo@example.com,Bo,\n",
    )
    one = run(workspace, db, clock, first)
    two = run(workspace, db, clock, second)
    assert (two.created, two.updated) == (1, 1)

    clock.advance(minutes=1)
    assert undo_batch(db, two.batch_id, clock=clock).reverted_contacts == 1
    result = undo_batch(db, one.batch_id, clock=clock)

    assert result.removed_contacts == 1 and result.kept == []
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0
    assert [b["status"] for b in list_batches(db)] == ["undone", "undone"]


def test_undo_of_an_earlier_batch_names_the_later_one(workspace, db, clock, tmp_path):
    one = run(workspace, db, clock, write(tmp_path / "a1.csv", "Email\nana@x.org\n"))
    two = run(
        workspace,
        db,
        clock,
        write(tmp_path / "a2.csv", "Email,Company\nana@x.org,Lima Bakery\n"),
    )
    assert two.updated == 1

    with pytest.raises(CxmError, match=f"import batch {two.batch_id}: undo that"):
        undo_batch(db, one.batch_id, clock=clock)


ENGINE_BOOKKEEPING = [
    ("sequence.exited", "engine", {"sequence": "new-lead", "reason": "replied"}),
    ("sequence.completed", "engine", {"sequence": "new-lead"}),
    ("step.skipped", "runner", {"sequence": "new-lead", "reason": "no phone"}),
    ("step.deferred", "runner", {"sequence": "new-lead", "reason": "quiet hours"}),
    ("step.failed", "runner", {"sequence": "new-lead", "reason": "provider down"}),
    ("stage.changed", "rule", {"pipeline": "sales", "to": "contacted", "by": "rule:1"}),
    ("stage.changed", "sequence", {"pipeline": "sales", "to": "nurture"}),
    ("contact.updated", "import", {"undone_batch": 7, "fields": []}),
    ("tag.added", "runner", {"tag": "nurtured"}),
]

ACTIVITY = [
    ("message.sent", "runner", {"channel": "sms", "automated": True}),
    ("step.sent", "runner", {"sequence": "new-lead", "step": "first-text"}),
    ("message.received", "sms", {"channel": "sms"}),
    ("form.submitted", "web", {"form": "contact"}),
    ("appointment.booked", "cli", {"starts_at": "2026-03-09T15:00:00Z"}),
    ("invoice.paid", "cli", {"amount": 120}),
    ("review.received", "import", {"platform": "google", "rating": 5}),
    ("stage.changed", "cli", {"pipeline": "sales", "to": "won", "by": "cli"}),
    ("contact.updated", "cli", {"fields": ["company"]}),
    ("tag.added", "cli", {"tag": "vip"}),
]


@pytest.mark.parametrize(("type_", "source", "data"), ENGINE_BOOKKEEPING)
def test_engine_bookkeeping_does_not_block_an_undo(
    workspace, db, clock, tmp_path, type_, source, data
):
    summary = run(workspace, db, clock, write(tmp_path / "a.csv", "Email\na@x.org\n"))
    clock.advance(minutes=5)
    record_event(
        db, contact_id_of(db, "a@x.org"), type_, clock=clock, data=data, source=source
    )

    result = undo_batch(db, summary.batch_id, clock=clock)

    assert result.removed_contacts == 1 and result.kept == []


@pytest.mark.parametrize(("type_", "source", "data"), ACTIVITY)
def test_what_the_person_or_staff_did_blocks_an_undo(
    workspace, db, clock, tmp_path, type_, source, data
):
    summary = run(workspace, db, clock, write(tmp_path / "a.csv", "Email\na@x.org\n"))
    clock.advance(minutes=5)
    record_event(
        db, contact_id_of(db, "a@x.org"), type_, clock=clock, data=data, source=source
    )

    with pytest.raises(CxmError, match=rf"later activity \({type_} at"):
        undo_batch(db, summary.batch_id, clock=clock)
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 1


def test_cli_import_then_a_run_that_sent_nothing_can_be_undone(
    cli, workspace, clock, tmp_path
):
    # 23:00 in Chicago: every first step waits for the morning.
    clock.set("2026-03-03T05:00:00Z")
    path = write(tmp_path / "a.csv", "Name,Email,Phone\nAna,ana@x.org,312-555-0142\n")
    assert cli("leads", "import", str(path)).exit_code == 0

    ran = cli("run", "--once")

    assert ran.exit_code == 0, ran.stderr
    db = workspace.open_db()
    try:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        after = [row[0] for row in db.execute("SELECT type FROM events WHERE id > 2")]
    finally:
        db.close()
    assert after and all(t.startswith(("step.", "sequence.")) for t in after)

    undo = cli("leads", "undo", "1", "--json")

    assert undo.exit_code == 0, undo.stderr
    assert undo.json()["removed_contacts"] == 1
    assert cli("contacts", "list", "--json").json() == []


def test_keep_blocked_marks_the_batch_partly_undone(cli, workspace, clock, tmp_path):
    path = write(tmp_path / "a.csv", "Email\nana@x.org\nbo@x.org\n")
    assert cli("leads", "import", str(path)).exit_code == 0
    db = workspace.open_db()
    try:
        ana = contact_id_of(db, "ana@x.org")
        clock.advance(minutes=5)
        record_event(db, ana, "message.received", clock=clock, data={})
    finally:
        db.close()

    result = cli("leads", "undo", "1", "--keep-blocked", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["status"] == "partly undone"
    assert result.json()["removed_contacts"] == 1
    batches = cli("leads", "batches", "--json").json()
    assert [b["status"] for b in batches] == ["partly undone"]
    assert "partly undone" in cli("leads", "batches").stdout
    again = cli("leads", "undo", "1", "--keep-blocked")
    assert again.exit_code == 1 and "partly undone" in again.stderr
    assert [c["id"] for c in cli("contacts", "list", "--json").json()] == [ana]


def test_keep_blocked_refuses_a_batch_where_nothing_can_be_undone(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "a.csv", "Email\nana@x.org\nbo@x.org\n")
    summary = run(workspace, db, clock, path)
    clock.advance(minutes=5)
    for email in ("ana@x.org", "bo@x.org"):
        record_event(db, contact_id_of(db, email), "message.received", clock=clock)

    with pytest.raises(CxmError, match="nothing can be undone"):
        undo_batch(db, summary.batch_id, clock=clock, keep_blocked=True)

    assert [b["status"] for b in list_batches(db)] == ["complete"]
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 2


def test_an_opt_out_after_the_import_is_the_reason_given(
    workspace, db, clock, tmp_path
):
    from cxm_cli.contacts import set_consent

    path = write(tmp_path / "a.csv", "Email,Phone\nana@x.org,312-555-0142\nbo@x.org,\n")
    summary = run(workspace, db, clock, path)
    ana = contact_id_of(db, "ana@x.org")
    clock.advance(minutes=5)
    record_event(db, ana, "message.received", clock=clock, data={"channel": "sms"})
    set_consent(db, ana, "sms", "opted_out", clock=clock, source="sms")

    result = undo_batch(db, summary.batch_id, clock=clock)

    assert result.removed_contacts == 1
    assert result.kept == [{"contact_id": ana, "reason": OPT_OUT_KEPT}]
    assert [b["status"] for b in list_batches(db)] == ["undone"]


# ------------------------------------- contacts merged or erased since the import


def test_undo_refuses_a_batch_whose_only_contact_was_merged_away(
    cli, workspace, tmp_path
):
    # Finding 9: the merge left nothing of the batch to remove, and undo said
    # "undone, removed 0" and marked the batch undone.
    write(tmp_path / "a.csv", "Email,Phone\nann@x.org,312-555-0101\n")
    write(tmp_path / "b.csv", "Email,Phone\nzed@x.org,312-555-0101\n")
    for name in ("a.csv", "b.csv"):
        assert cli("leads", "import", str(tmp_path / name)).exit_code == 0
    assert cli("contacts", "merge", "ann@x.org", "zed@x.org").exit_code == 0

    plain = cli("leads", "undo", "2")
    keeping = cli("leads", "undo", "2", "--keep-blocked")

    assert plain.exit_code == 1
    assert "contact 2: merged into contact 1 since the import" in plain.stderr
    assert keeping.exit_code == 1 and "nothing can be undone" in keeping.stderr
    assert "merged into contact 1" in keeping.stderr
    batches = cli("leads", "batches", "--json").json()
    assert [b["status"] for b in batches] == ["complete", "complete"]
    assert [c["id"] for c in cli("contacts", "list", "--json").json()] == [1]


def test_keep_blocked_undoes_the_rest_and_names_the_merged_contact(
    workspace, db, clock, tmp_path
):
    from cxm_cli.importing.duplicates import merge_contacts

    run(workspace, db, clock, write(tmp_path / "a.csv", "Email\nann@x.org\n"))
    path = write(tmp_path / "b.csv", "Email\nzed@x.org\nbo@x.org\nal@x.org\n")
    summary = run(workspace, db, clock, path)
    ann, zed, bo, al = (
        contact_id_of(db, e) for e in ("ann@x.org", "zed@x.org", "bo@x.org", "al@x.org")
    )
    clock.advance(minutes=5)
    merge_contacts(db, bo, zed, clock=clock)  # zed into bo, then bo into ann
    merge_contacts(db, ann, bo, clock=clock)

    with pytest.raises(CxmError, match=f"contact {zed}: merged into contact {ann}"):
        undo_batch(db, summary.batch_id, clock=clock)
    result = undo_batch(db, summary.batch_id, clock=clock, keep_blocked=True)

    assert result.removed_contacts == 1
    assert result.status == "partly undone"
    assert [(k["contact_id"], k["reason"]) for k in result.kept] == [
        (zed, f"merged into contact {ann} since the import"),
        (bo, f"merged into contact {ann} since the import"),
    ]
    remaining = [r[0] for r in db.execute("SELECT id FROM contacts ORDER BY id")]
    assert remaining == [ann] and al not in remaining
    assert [b["status"] for b in list_batches(db)] == ["partly undone", "complete"]


def test_an_erased_contact_is_reported_as_no_longer_existing(
    workspace, db, clock, tmp_path
):
    from cxm_cli.privacy import erase_contact

    summary = run(workspace, db, clock, write(tmp_path / "a.csv", "Email\nann@x.org\n"))
    erase_contact(workspace, db, contact_id_of(db, "ann@x.org"), clock=clock)

    # The erasure took the batch's record of her along: only the count is left.
    for keep_blocked in (False, True):
        with pytest.raises(CxmError, match="the 1 contact it created was erased"):
            undo_batch(db, summary.batch_id, clock=clock, keep_blocked=keep_blocked)

    assert [b["status"] for b in list_batches(db)] == ["complete"]


def test_a_contact_merged_then_erased_no_longer_exists(workspace, db, clock, tmp_path):
    from cxm_cli.importing.duplicates import merge_contacts
    from cxm_cli.privacy import erase_contact

    path = write(tmp_path / "a.csv", "Email\nann@x.org\nzed@x.org\n")
    summary = run(workspace, db, clock, path)
    ann, zed = contact_id_of(db, "ann@x.org"), contact_id_of(db, "zed@x.org")
    merge_contacts(db, ann, zed, clock=clock)
    erase_contact(workspace, db, ann, clock=clock)  # and the merge's record

    with pytest.raises(CxmError, match=f"contact {zed}: no longer exists"):
        undo_batch(db, summary.batch_id, clock=clock, keep_blocked=True)
