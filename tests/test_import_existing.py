"""Importing existing customers (--existing-contacts) and the enrollment count.

A list of people the business already knows is no list of new leads: they get
``contact.imported``, so no new-lead sequence, first pipeline stage or lead
count. Every import says how many contacts it enrolled in follow-up sequences.
"""

from __future__ import annotations

import json

from cxm_cli.importing import ImportOptions, import_file

CUSTOMERS = (
    "First Name,Last Name,Email,Mobile Phone\n"
    "Ada,Lind,ada@example.com,312-555-0101\n"
    "Bo,Nye,bo@example.com,312-555-0102\n"
)
PERIOD = ("--since", "2026-03-01T00:00:00Z", "--until", "2026-03-03T00:00:00Z")


def write_customers(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS, encoding="utf-8")
    return path


def run_import(workspace, db, clock, path, **options):
    options.setdefault("rejects_path", path.with_suffix(".rejects.csv"))
    return import_file(
        workspace, db, path, clock=clock, options=ImportOptions(**options)
    )


def count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def event_types(db) -> list[str]:
    return [r["type"] for r in db.query("SELECT type FROM events ORDER BY id")]


def test_existing_contacts_start_no_lead_follow_up(workspace, db, clock, tmp_path):
    summary = run_import(workspace, db, clock, write_customers(tmp_path), existing=True)

    assert (summary.created, summary.enrolled) == (2, 0)
    assert event_types(db) == ["contact.imported", "contact.imported"]
    data = json.loads(db.execute("SELECT data FROM events").fetchone()[0])
    assert data["existing"] is True and data["batch_id"] == summary.batch_id
    assert count(db, "SELECT COUNT(*) FROM enrollments") == 0
    assert count(db, "SELECT COUNT(*) FROM due_steps") == 0
    assert count(db, "SELECT COUNT(*) FROM contact_stages") == 0


def test_new_leads_are_counted_as_enrolled(workspace, db, clock, tmp_path):
    summary = run_import(workspace, db, clock, write_customers(tmp_path))

    assert event_types(db).count("lead.created") == 2
    assert summary.enrolled == 2
    assert summary.enrolled_by_sequence == {"new-lead": 2}
    assert count(db, "SELECT COUNT(DISTINCT contact_id) FROM enrollments") == 2


def test_reimport_enrols_nobody_again(workspace, db, clock, tmp_path):
    path = write_customers(tmp_path)
    run_import(workspace, db, clock, path)

    again = run_import(workspace, db, clock, path)

    assert (again.unchanged, again.enrolled, again.enrolled_by_sequence) == (2, 0, {})


def test_dry_run_tells_who_would_be_enrolled(workspace, db, clock, tmp_path):
    summary = run_import(workspace, db, clock, write_customers(tmp_path), dry_run=True)

    assert (summary.enrolled, summary.enrolled_by_sequence) == (2, {"new-lead": 2})
    assert count(db, "SELECT COUNT(*) FROM enrollments") == 0
    assert count(db, "SELECT COUNT(*) FROM contacts") == 0


def test_cli_says_how_many_were_enrolled(cli, tmp_path):
    path = write_customers(tmp_path)

    result = cli("leads", "import", str(path))
    assert result.exit_code == 0, result.stderr
    assert "2 contacts were enrolled in follow-up sequences (new-lead 2)" in (
        result.stderr
    )

    again = cli("leads", "import", str(path), "--json")
    assert again.exit_code == 0, again.stderr
    assert (again.json()["enrolled"], again.json()["enrolled_by_sequence"]) == (0, {})
    assert "no contacts were enrolled in follow-up sequences" in again.stderr


def test_cli_existing_contacts_flag(cli, db, tmp_path):
    result = cli("leads", "import", str(write_customers(tmp_path)), "--existing")

    assert result.exit_code == 0, result.stderr
    assert "no contacts were enrolled in follow-up sequences" in result.stderr
    assert event_types(db) == ["contact.imported", "contact.imported"]
    options = db.execute("SELECT options FROM import_batches").fetchone()[0]
    assert json.loads(options)["existing"] is True


def test_audit_does_not_count_existing_contacts_as_leads(cli, tmp_path):
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "Name,Email,Created\n"
        "Ada Lind,ada@example.com,2026-03-01 10:00\n"
        "Bo Nye,bo@example.com,2026-03-01 11:00\n",
        encoding="utf-8",
    )
    leads = tmp_path / "leads.csv"
    leads.write_text(
        "Name,Email,Created\nCy Oda,cy@example.com,2026-03-01 12:00\n",
        encoding="utf-8",
    )
    assert cli("leads", "import", str(customers), "--existing-contacts").exit_code == 0
    assert cli("leads", "import", str(leads)).exit_code == 0

    report = cli("audit", *PERIOD, "--json").json()

    assert report["speed_to_lead"]["overall"]["leads"] == 1
