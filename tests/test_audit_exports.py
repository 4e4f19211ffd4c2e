"""Auditing a client's raw exports, and the activity importer behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxm_cli.audit.activity_import import import_activity, map_columns
from cxm_cli.errors import InputError

PERIOD = ("--since", "2026-02-01", "--until", "2026-02-28")

LEADS = """First Name,Last Name,Email,Phone,Source,Created
Ana,Lopez,ana@example.com,+1 312 555 0101,web,2026-02-02 10:00
Ben,Okafor,ben@example.com,312-555-0102,facebook,2026-02-05 09:00
Cara,Ng,,(312) 555-0103,web,2026-02-10 14:00
Dev,Patel,dev@example.com,,google,
"""

MESSAGES = """contact,direction,channel,timestamp,body
ana@example.com,outbound,sms,2026-02-02 10:04,Hi Ana
ana@example.com,inbound,sms,2026-02-02 10:20,Thanks
+13125550102,outbound,sms,2026-02-05 12:00,Hi Ben
(312) 555-0103,Sent,Text,2026-02-10 14:02,Hi Cara
(312) 555-0103,Received,Text,2026-02-10 15:00,A question
eve@example.com,inbound,,2026-02-12 09:00,Hello?
ben@example.com,sideways,sms,2026-02-12 10:00,?
"""

# Semicolons and a UTF-8 BOM, as European Excel saves them.
APPOINTMENTS = (
    "\ufeffEmail;Phone;Start;Status;Booked at;ID\n"
    "ana@example.com;;2026-02-06 10:00;Completed;2026-02-02 10:30;A1\n"
    ";312-555-0103;2026-02-14 11:00;No-show;2026-02-10 15:10;A2\n"
    "ben@example.com;;2026-02-20 09:00;Canceled;;A3\n"
    ";;2026-02-21 09:00;completed;;A4\n"
)

INVOICES = """Customer Email,Amount,Paid Date,Status,Invoice
ana@example.com,"$1,204.50",2026-02-06,paid,INV-1
ana@example.com,$50.00,,unpaid,INV-2
dev@example.com,abc,2026-02-07,paid,INV-3
"""

REVIEWS = """platform,author,email,rating,text,date
google,Ana Lopez,ana@example.com,5,Lovely people,2026-02-08
google,Someone Else,,2,Slow,2026-02-09
"""


@pytest.fixture
def exports(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "exports"
    folder.mkdir()
    files = {}
    for name, text in (
        ("leads", LEADS),
        ("messages", MESSAGES),
        ("appointments", APPOINTMENTS),
        ("invoices", INVOICES),
        ("reviews", REVIEWS),
    ):
        files[name] = folder / f"{name}.csv"
        files[name].write_text(text, encoding="utf-8")
    return files


def export_args(exports: dict[str, Path]) -> list[str]:
    args = []
    for name, path in exports.items():
        args += [f"--{name}", str(path)]
    return args


def without_source(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    del report["report"]["source"]
    return report


def test_raw_exports_audit_equals_the_audit_after_a_full_import(
    cli, exports, workspace, db, clock
):
    raw = cli(
        "audit",
        *export_args(exports),
        *PERIOD,
        "--timezone",
        workspace.timezone,
        "--name",
        "Bright Smile Dental",
        "--json",
    )
    assert raw.exit_code == 0, raw.stderr
    raw_report = raw.json()

    # The same files into the real workspace, each with its own importer.
    assert cli("leads", "import", str(exports["leads"])).exit_code == 0
    import_activity(
        workspace,
        db,
        [
            ("messages", exports["messages"]),
            ("appointments", exports["appointments"]),
            ("invoices", exports["invoices"]),
        ],
        clock=clock,
    )
    assert cli("reviews", "import", str(exports["reviews"])).exit_code == 0
    full = cli("audit", *PERIOD, "--json")
    assert full.exit_code == 0, full.stderr

    assert without_source(raw_report) == without_source(full.json())

    # And the numbers are the ones the files hold, not two empty audits.
    speed = raw_report["speed_to_lead"]["overall"]
    # Ana 4 min, Ben 3 h, Cara 2 min; Eve (only a message, unknown) never;
    # Dev has no creation time, so no inbound moment: not a lead.
    assert (speed["leads"], speed["answered"], speed["median_seconds"]) == (
        4,
        3,
        240.0,
    )
    assert raw_report["unanswered"]["overall"]["conversations"] == 3  # Ana Cara Eve
    appointments = raw_report["appointments"]["overall"]
    assert (
        appointments["booked"],
        appointments["completed"],
        appointments["no_show"],
        appointments["cancelled"],
    ) == (3, 1, 1, 1)
    assert raw_report["attribution"]["overall"]["revenue"] == 1204.5
    assert raw_report["reviews"]["overall"]["public_reviews"] == 2
    assert raw_report["reviews"]["overall"]["public_average_rating"] == 3.5


def test_raw_exports_report_what_was_left_out(cli, exports, workspace):
    result = cli("audit", *export_args(exports), *PERIOD, "--json")
    assert result.exit_code == 0, result.stderr
    source = result.json()["report"]["source"]
    assert source["kind"] == "exports"
    assert {f["name"] for f in source["files"]} == {
        "leads.csv",
        "messages.csv",
        "appointments.csv",
        "invoices.csv",
        "reviews.csv",
    }
    activity = source["activity"]
    assert activity["contacts_created"] == 1  # eve@example.com
    assert activity["skipped"] == [
        {
            "file": str(exports["invoices"]),
            "row": 2,
            "reason": "status unpaid: not paid",
        }
    ]
    rejected = {
        (Path(r["file"]).name, r["row"], r["column"]) for r in activity["rejected"]
    }
    assert rejected == {
        ("messages.csv", 7, "direction"),
        ("appointments.csv", 4, "contact"),
        ("invoices.csv", 3, "amount"),
    }
    assert "appointments.csv row 4 contact" in result.stderr
    # The throw-away workspace is gone, and the real one was not touched.
    assert not list(Path(workspace.root / "data").glob("*.rejects.csv"))


def test_keep_workspace_keeps_the_imported_exports(cli, exports, tmp_path):
    kept = tmp_path / "client"
    result = cli(
        "audit", *export_args(exports), "--keep-workspace", str(kept), "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert (kept / "cxm.toml").is_file()
    again = cli("--workspace", str(kept), "audit", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["attribution"]["overall"]["revenue"] == 1204.5


def test_activity_file_missing_a_column_is_refused(cli, tmp_path, exports):
    broken = tmp_path / "messages.csv"
    broken.write_text("contact,body\nana@example.com,hi\n", encoding="utf-8")
    result = cli("audit", "--leads", str(exports["leads"]), "--messages", str(broken))
    assert result.exit_code == 1
    assert "messages.csv: a messages file needs a column for direction, timestamp" in (
        result.stderr
    )


def test_missing_export_file_is_named(cli, tmp_path):
    result = cli("audit", "--leads", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1
    assert "nope.csv: no such file" in result.stderr


def test_activity_import_records_events_by_the_conventions(
    workspace, db, clock, exports
):
    summary = import_activity(
        workspace,
        db,
        [
            ("messages", exports["messages"]),
            ("appointments", exports["appointments"]),
            ("invoices", exports["invoices"]),
        ],
        clock=clock,
    )
    assert summary.recorded == 6 + 6 + 1  # messages, appointment events, invoice
    # ana, cara, eve, and Ben twice: without the leads file nothing says his
    # phone and his email are one person.
    assert summary.contacts_created == 5

    message = db.execute(
        "SELECT m.direction, m.channel, m.status, m.body, e.type, e.data "
        "FROM messages m JOIN events e ON e.id = m.event_id "
        "WHERE m.body = 'A question'"
    ).fetchone()
    assert message[:5] == (
        "inbound",
        "sms",
        "received",
        "A question",
        "message.received",
    )
    assert json.loads(message[5])["channel"] == "sms"
    # Eve wrote by email: with no channel column value, her address decides.
    assert (
        db.execute("SELECT channel FROM messages WHERE body = 'Hello?'").fetchone()[0]
        == "email"
    )

    events = [
        (row[0], json.loads(row[1]), row[2])
        for row in db.execute(
            "SELECT type, data, at FROM events WHERE type LIKE 'appointment.%' "
            "OR type LIKE 'invoice.%' ORDER BY at, id"
        )
    ]
    # Chicago is UTC-6 in February.
    assert events == [
        (
            "appointment.booked",
            {"appointment_id": "A1", "starts_at": "2026-02-06T16:00:00.000000Z"},
            "2026-02-02T16:30:00.000000Z",
        ),
        (
            "invoice.paid",
            {"amount": 1204.5, "invoice_id": "INV-1"},
            "2026-02-06T06:00:00.000000Z",
        ),
        (
            "appointment.completed",
            {"appointment_id": "A1", "starts_at": "2026-02-06T16:00:00.000000Z"},
            "2026-02-06T16:00:00.000000Z",
        ),
        (
            "appointment.booked",
            {"appointment_id": "A2", "starts_at": "2026-02-14T17:00:00.000000Z"},
            "2026-02-10T21:10:00.000000Z",
        ),
        (
            "appointment.no_show",
            {"appointment_id": "A2", "starts_at": "2026-02-14T17:00:00.000000Z"},
            "2026-02-14T17:00:00.000000Z",
        ),
        (
            "appointment.booked",
            {"appointment_id": "A3", "starts_at": "2026-02-20T15:00:00.000000Z"},
            "2026-02-20T15:00:00.000000Z",
        ),
        (
            "appointment.cancelled",
            {"appointment_id": "A3", "starts_at": "2026-02-20T15:00:00.000000Z"},
            "2026-02-20T15:00:00.000000Z",
        ),
    ]
    # No lead.created for people the activity files introduced.
    assert (
        db.execute(
            "SELECT count(*) FROM events WHERE type = 'lead.created'"
        ).fetchone()[0]
        == 0
    )


def test_activity_import_is_all_or_nothing_per_call(
    workspace, db, clock, tmp_path, exports
):
    broken = tmp_path / "invoices.csv"
    broken.write_text("email,amount\nana@example.com,10\n", encoding="utf-8")
    with pytest.raises(InputError, match="paid_at"):
        import_activity(
            workspace,
            db,
            [("messages", exports["messages"]), ("invoices", broken)],
            clock=clock,
        )
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_headers_map_loosely_and_prefer_the_specific_name():
    columns = map_columns(
        "messages",
        ["Date", "Customer Email", "Direction", "Sent At", "Message"],
        "m.csv",
    )
    assert columns == {"email": 1, "direction": 2, "timestamp": 3, "body": 4}


def test_leads_alone_do_not_read_as_a_business_that_never_answers(cli, tmp_path):
    # With no message history in the audit, "never answered" is what the data
    # cannot tell; the finding says so and names the way to give it.
    leads = tmp_path / "many-leads.csv"
    leads.write_text(
        "First Name,Email,Created\n"
        + "".join(
            f"Lead{n},lead{n}@example.com,2026-02-{n + 2:02d} 10:00\n" for n in range(8)
        ),
        encoding="utf-8",
    )

    result = cli("audit", "--leads", str(leads), *PERIOD, "--json")

    assert result.exit_code == 0, result.stderr
    [slow] = [f for f in result.json()["findings"] if f["kind"] == "slow_leads"]
    assert "no answer to any lead is on record" in slow["title"]
    assert "--messages" in slow["title"]
    assert "never answered" not in slow["title"]
