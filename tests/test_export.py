"""`cxm contacts export`: spreadsheet-safe; back through import, the same
workspace is unchanged and a new one gets existing contacts, not new leads."""

from __future__ import annotations

import csv
import io
import json

from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.export import export_contacts, spreadsheet_safe
from cxm_cli.runner import run_once
from cxm_cli.workspace import init_workspace, load_workspace
from tests.conftest import CORPUS_DIR, REPO_DIR

SAMPLE = REPO_DIR / "data" / "sample-leads.csv"


def fill(workspace, db, clock, tmp_path):
    options = ImportOptions(rejects_path=tmp_path / "r.csv")
    import_file(workspace, db, SAMPLE, clock=clock, options=options)
    tricky = tmp_path / "tricky.csv"
    tricky.write_text(
        "Name,Email,Notes,Company\n"
        '=HYPERLINK("http://x"),formula@example.com,"-2+3",@risk\n',
        encoding="utf-8",
    )
    import_file(workspace, db, tricky, clock=clock, options=options)
    files = list(_opt_outs_and_bounces(tmp_path))
    for name in (
        "08b-mailchimp-unsubscribed_members_export.csv",
        "12-square-customers-export.csv",
    ):
        if (CORPUS_DIR / name).exists():
            files.append(CORPUS_DIR / name)
    for path in files:
        import_file(workspace, db, path, clock=clock, options=options)


def export_text(db, format="csv") -> str:
    out = io.StringIO()
    export_contacts(db, out, format=format)
    return out.getvalue()


def test_cells_that_would_run_as_formulas_are_guarded(workspace, db, clock, tmp_path):
    fill(workspace, db, clock, tmp_path)
    rows = list(csv.DictReader(io.StringIO(export_text(db))))
    risky = [r for r in rows if r["emails"] == "formula@example.com"][0]
    assert risky["first_name"].startswith("'=")
    assert risky["company"] == "'@risk"
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
    assert spreadsheet_safe("+1312") == "'+1312" and spreadsheet_safe("Ana") == "Ana"


def test_export_reimports_into_the_same_workspace_unchanged(
    workspace, db, clock, tmp_path
):
    fill(workspace, db, clock, tmp_path)
    for format in ("csv", "jsonl"):
        path = tmp_path / f"export.{format}"
        path.write_text(export_text(db, format), encoding="utf-8")
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        summary = import_file(
            workspace, db, path, clock=clock, options=ImportOptions(rejects_path=None)
        )
        assert summary.format == "cxm"
        assert (summary.created, summary.updated, summary.rejected) == (0, 0, 0)
        assert summary.unchanged == summary.records
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events


def test_export_round_trips_into_a_fresh_workspace(workspace, db, clock, tmp_path):
    fill(workspace, db, clock, tmp_path)
    for format in ("csv", "jsonl"):
        first = export_text(db, format)
        path = tmp_path / f"export.{format}"
        path.write_text(first, encoding="utf-8")

        init_workspace(tmp_path / f"other-{format}")
        other = load_workspace(tmp_path / f"other-{format}")
        other_db = other.open_db()
        import_file(other, other_db, path, clock=clock, options=ImportOptions())
        second = export_text(other_db, format)
        other_db.close()

        assert _comparable(first, format) == _comparable(second, format)


def test_a_new_workspace_keeps_the_leads_original_date(workspace, db, clock, tmp_path):
    # Finding 13: the export wrote the day of the import, not the lead's date.
    source = tmp_path / "leads.csv"
    source.write_text(
        "Name,Email,Created Date\n"
        "Rosa Diaz,rosa@example.com,2024-05-01T14:30:00Z\n"
        "Pat Ng,pat@example.com,\n",
        encoding="utf-8",
    )
    import_file(workspace, db, source, clock=clock, options=ImportOptions())
    imported_at = db.execute(
        "SELECT created_at FROM contacts WHERE email = 'pat@example.com'"
    ).fetchone()[0]
    original = _lead_times(db)["rosa@example.com"]
    assert original.startswith("2024-05-01T14:30:00")

    for format in ("csv", "jsonl"):
        exported = _by_email(export_text(db, format), format)
        assert exported["rosa@example.com"]["created_at"] == original
        # No date in the source: the day it became a contact here.
        assert exported["pat@example.com"]["created_at"] == imported_at

        clock.advance(days=30)
        path = tmp_path / f"export.{format}"
        path.write_text(export_text(db, format), encoding="utf-8")
        init_workspace(tmp_path / f"new-{format}")
        other = load_workspace(tmp_path / f"new-{format}")
        other_db = other.open_db()
        import_file(other, other_db, path, clock=clock, options=ImportOptions())
        assert _lead_times(other_db, "contact.imported") == {
            "rosa@example.com": original,
            "pat@example.com": imported_at,
        }
        again = _by_email(export_text(other_db, format), format)
        other_db.close()
        assert again["rosa@example.com"]["created_at"] == original


def _lead_times(db, event_type: str = "lead.created") -> dict[str, str]:
    """Each contact's created_time (from lead.created or another type), by email."""
    return dict(
        db.execute(
            "SELECT c.email, json_extract(e.data, '$.created_time') FROM events e"
            " JOIN contacts c ON c.id = e.contact_id WHERE e.type = ?",
            [event_type],
        ).fetchall()
    )


def _by_email(text: str, format: str) -> dict[str, dict]:
    if format == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return {row["emails"]: row for row in rows}
    rows = [json.loads(line) for line in text.splitlines()]
    return {row["emails"][0]: row for row in rows}


def _comparable(text: str, format: str) -> list[dict]:
    """Export records without the columns that name this workspace's rows or
    files: a consent's source in a new workspace is the import of the export."""
    if format == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    for row in rows:
        for column in ("cxm_id", "email_consent_source", "sms_consent_source"):
            row.pop(column, None)
    return rows


def _opt_outs_and_bounces(tmp_path):
    """A list with a dated opt-out and a plain lead; a Mailchimp cleaned file."""
    leads = tmp_path / "optouts.csv"
    leads.write_text(
        "Name,Email,Phone,Opt Out\n"
        "Olga Out,olga@example.com,+13125550191,2025-11-03T09:30:00Z\n"
        "Pia Plain,pia@example.com,+13125550192,\n",
        encoding="utf-8",
    )
    cleaned = tmp_path / "cleaned_members_export.csv"
    cleaned.write_text(
        "Email Address,First Name,Last Name,Phone Number,MEMBER_RATING,"
        "OPTIN_TIME,CONFIRM_TIME,CLEAN_TIME,LEID,EUID\n"
        "bea@example.com,Bea,Bounce,+13125550193,2,2024-01-05 10:00:00,,"
        "2025-06-01 08:00:00,123,abc\n",
        encoding="utf-8",
    )
    return leads, cleaned


def test_a_new_workspace_gets_existing_contacts_and_messages_nobody(
    workspace, db, clock, tmp_path
):
    # Second trial, finding 4: exported contacts became new leads in a new
    # workspace (new-lead texts, a bouncing address emailed, opt-outs redated).
    leads, cleaned = _opt_outs_and_bounces(tmp_path)
    import_file(workspace, db, leads, clock=clock, options=ImportOptions())
    import_file(workspace, db, cleaned, clock=clock, options=ImportOptions())
    opted_out_at = "2025-11-03T09:30:00.000000Z"
    assert _consents(db)["olga@example.com"] == {
        "email": ("opted_out", opted_out_at),
        "sms": ("opted_out", opted_out_at),
    }
    clock.advance(days=30)

    for format in ("csv", "jsonl"):
        exported = _by_email(export_text(db, format), format)
        olga = exported["olga@example.com"]
        assert olga["email_opted_out_at"] == "2025-11-03T09:30:00Z"
        assert olga["sms_opted_out_at"] == "2025-11-03T09:30:00Z"
        assert olga["email_consent_source"] == "import:optouts.csv"
        bouncing = exported["bea@example.com"]["bouncing_emails"]
        assert bouncing in ("bea@example.com", ["bea@example.com"])
        assert not exported["pia@example.com"].get("bouncing_emails")

        path = tmp_path / f"export.{format}"
        path.write_text(export_text(db, format), encoding="utf-8")
        other, other_db = _new_workspace(tmp_path / f"new-{format}")
        summary = import_file(
            other, other_db, path, clock=clock, options=ImportOptions()
        )
        assert (summary.format, summary.created, summary.enrolled) == ("cxm", 3, 0)

        types = [r[0] for r in other_db.execute("SELECT type FROM events")]
        assert "lead.created" not in types and types.count("contact.imported") == 3
        assert _consents(other_db)["olga@example.com"] == {
            "email": ("opted_out", opted_out_at),
            "sms": ("opted_out", opted_out_at),
        }
        assert _email_statuses(other_db) == {
            "olga@example.com": "ok",
            "pia@example.com": "ok",
            "bea@example.com": "bouncing",
        }

        run_once(other, other_db, clock)
        clock.advance(days=5)
        run_once(other, other_db, clock)
        assert _outbound(other_db) == []
        other_db.close()


def test_an_export_can_still_be_imported_as_new_leads(workspace, db, clock, tmp_path):
    # --map cxm_id=ignore: the rows are new leads and get the new-lead
    # follow-up, while opt-outs and bounces still hold.
    leads, cleaned = _opt_outs_and_bounces(tmp_path)
    import_file(workspace, db, leads, clock=clock, options=ImportOptions())
    import_file(workspace, db, cleaned, clock=clock, options=ImportOptions())
    path = tmp_path / "export.csv"
    path.write_text(export_text(db), encoding="utf-8")

    other, other_db = _new_workspace(tmp_path / "as-leads")
    options = ImportOptions(mapping=["cxm_id=ignore"])
    summary = import_file(other, other_db, path, clock=clock, options=options)
    assert summary.enrolled == 3
    run_once(other, other_db, clock)
    sent = _outbound(other_db)
    other_db.close()

    assert ("pia@example.com", "email") in sent and ("pia@example.com", "sms") in sent
    assert ("bea@example.com", "sms") in sent
    assert ("bea@example.com", "email") not in sent
    assert not [who for who, _ in sent if who == "olga@example.com"]


def _new_workspace(root):
    init_workspace(root)
    other = load_workspace(root)
    return other, other.open_db()


def _consents(db) -> dict[str, dict]:
    by_email: dict[str, dict] = {}
    for email, channel, status, changed_at in db.execute(
        "SELECT c.email, s.channel, s.status, s.changed_at FROM consents s"
        " JOIN contacts c ON c.id = s.contact_id"
    ):
        by_email.setdefault(email, {})[channel] = (status, changed_at)
    return by_email


def _email_statuses(db) -> dict[str, str]:
    return dict(db.execute("SELECT email, status FROM contact_emails").fetchall())


def _outbound(db) -> list[tuple[str, str]]:
    """(contact's email, channel) of every outbound message, sent or not."""
    return [
        tuple(row)
        for row in db.execute(
            "SELECT c.email, m.channel FROM messages m"
            " JOIN contacts c ON c.id = m.contact_id WHERE m.direction = 'outbound'"
        )
    ]


def test_cli_export_to_file(cli, tmp_path):
    out = tmp_path / "contacts.jsonl"
    assert (
        cli(
            "leads", "import", str(SAMPLE), "--rejects", str(tmp_path / "r.csv")
        ).exit_code
        == 0
    )
    result = cli("contacts", "export", "--format", "jsonl", "-o", str(out))
    assert result.exit_code == 0 and "exported 22 contacts" in result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 22 and json.loads(lines[0])["emails"] == [
        "maria.lopez@example.com"
    ]
    bad = cli("contacts", "export", "--format", "xml")
    assert bad.exit_code == 1 and "use csv or jsonl" in bad.stderr


def test_cli_export_into_a_missing_folder_is_one_clear_error(cli, tmp_path):
    out = tmp_path / "nonexist" / "contacts.csv"
    result = cli("contacts", "export", "-o", str(out))
    assert result.exit_code == 1
    assert f"--output {out}: the folder {out.parent} does not exist" in result.stderr
    assert not isinstance(result.exception, FileNotFoundError)


def test_a_number_another_holder_opted_out_of_stays_blocked_in_a_new_workspace(
    workspace, db, clock, tmp_path
):
    # Ann opted out of texts; Bob shares her phone. Only Bob is exported.
    household = tmp_path / "household.csv"
    household.write_text(
        "Name,Email,Phone,Do Not Text,Tags\n"
        "Ann Roe,ann@example.com,(312) 555-0101,yes,\n"
        "Bob Roe,bob@example.com,(312) 555-0101,,vip\n",
        encoding="utf-8",
    )
    import_file(workspace, db, household, clock=clock, options=ImportOptions())
    vip = io.StringIO()
    export_contacts(db, vip, tag="vip")
    path = tmp_path / "vip.csv"
    path.write_text(vip.getvalue(), encoding="utf-8")
    everyone = tmp_path / "everyone.csv"
    everyone.write_text(export_text(db), encoding="utf-8")

    # Back into the same workspace: nothing changes (Ann blocks it here).
    again = import_file(workspace, db, everyone, clock=clock, options=ImportOptions())
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)

    other, other_db = _new_workspace(tmp_path / "bob-only")
    options = ImportOptions(mapping=["cxm_id=ignore"])
    import_file(other, other_db, path, clock=clock, options=options)
    run_once(other, other_db, clock)
    texts = [row for row in _outbound(other_db) if row[1] == "sms"]
    bob = _consents(other_db)["bob@example.com"]
    other_db.close()

    assert texts == []
    assert bob["sms"][0] == "opted_out"
