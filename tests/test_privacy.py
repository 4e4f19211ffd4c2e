"""Export a person's data; erase them with no trace in the files cxm keeps."""

from __future__ import annotations

from cxm_cli.channels.outbox import contact_files, read_texts, texts_path
from cxm_cli.contacts import is_suppressed
from cxm_cli.events import record_event
from cxm_cli.inbound import record_inbound
from cxm_cli.messaging import send_message
from cxm_cli.store import write_transaction
from tests.support.fixtures import make_contact

EMAIL = "zebulon.quixote@example.com"
PHONE = "+15125550188"
NAME = "Zebulon Quixote"


def person_with_history(workspace, db, clock) -> tuple[int, int]:
    zeb = make_contact(
        db, clock, first_name="Zebulon", last_name="Quixote", email=EMAIL, phone=PHONE
    )
    other = make_contact(
        db,
        clock,
        first_name="Ana",
        last_name="Lima",
        email="ana@example.com",
        phone="+15125550101",
    )
    send_message(
        workspace,
        db,
        clock,
        zeb,
        "email",
        text="Hi {{ first_name }}",
        subject="Welcome",
    )
    send_message(workspace, db, clock, zeb, "sms", text="Hi from Bright Smile")
    record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="Call me at 512.555.0188",
        address=PHONE,
        provider_id="SMz1",
    )
    with write_transaction(db):
        # Someone else's record that mentions him, as free text would.
        record_event(
            db,
            other,
            "form.submitted",
            clock=clock,
            data={
                "form": "referral",
                "referred": f"{NAME} <{EMAIL.upper()}>, (512) 555-0188",
            },
        )
    return zeb, other


def test_export_data_holds_everything(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)

    exported = cli("contacts", "export-data", EMAIL)

    assert exported.exit_code == 0, exported.stderr
    data = exported.json()
    assert data["contact"]["id"] == zeb
    records = data["records"]
    assert {m["channel"] for m in records["messages"]} == {"email", "sms"}
    assert any(m["body"] == "Call me at 512.555.0188" for m in records["messages"])
    assert [e["email"] for e in records["contact_emails"]] == [EMAIL]
    assert any(e["type"] == "message.received" for e in records["events"])
    [eml] = data["outbox_files"]
    assert EMAIL in eml["content"] and eml["path"].endswith(".eml")
    [text] = data["outbox_texts"]
    assert text["body"] == "Hi from Bright Smile" and text["to"] == PHONE
    assert text["contact_id"] == zeb and text["kind"] == "text"


def test_show_summarises_a_person(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    shown = cli("contacts", "show", str(zeb), "--json")
    assert shown.exit_code == 0, shown.stderr
    summary = shown.json()
    assert summary["name"] == NAME
    assert summary["messages"]["sent"] == 2 and summary["messages"]["received"] == 1
    table = cli("contacts", "show", PHONE)
    assert table.exit_code == 0 and EMAIL in table.stdout


def test_erase_leaves_no_trace_in_database_wal_or_outbox(workspace, db, clock, cli):
    zeb, other = person_with_history(workspace, db, clock)
    send_message(workspace, db, clock, other, "sms", text="Hi Ana")
    assert contact_files(workspace, zeb) and read_texts(workspace, zeb)
    kept = contact_files(workspace, other)
    [other_line] = [
        line
        for line in texts_path(workspace, other).read_bytes().splitlines()
        if b'"contact_id":%d,' % other in line
    ]
    # A write a killed runner left half done holds the message too.
    [first] = contact_files(workspace, zeb)[:1]
    leftover = first.with_name(f".{first.name}.0badf00d.tmp")
    leftover.write_bytes(first.read_bytes())

    erased = cli("contacts", "erase", str(zeb), "--yes", "--json")

    assert erased.exit_code == 0, erased.stderr
    assert erased.json()["wal_emptied"] is True
    assert erased.json()["outbox_lines_removed"] == 1
    needles = [EMAIL, PHONE, "5125550188", "555-0188", NAME, "Zebulon", "Quixote"]
    files = [workspace.db_path, workspace.db_path.with_name("cxm.db-wal")]
    files += [p for p in workspace.outbox_dir.rglob("*") if p.is_file()]
    for path in files:
        if not path.exists():
            continue
        content = path.read_bytes().lower()
        for needle in needles:
            assert needle.lower().encode() not in content, (path.name, needle)

    assert is_suppressed(db, EMAIL) and is_suppressed(db, PHONE)
    assert db["contacts"].get(other)["email"] == "ana@example.com"
    # The folder is shared with other contacts: only the person's files go.
    assert contact_files(workspace, zeb, partial=True) == []
    assert not leftover.exists()
    assert contact_files(workspace, other) == kept
    # The shared texts file loses only his line; Ana's stays byte for byte.
    assert read_texts(workspace, zeb) == []
    assert texts_path(workspace, other).read_bytes() == other_line + b"\n"
    remaining = db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ?", [zeb]
    ).fetchone()[0]
    assert remaining == 0
    assert cli("timeline", str(zeb)).exit_code != 0


def test_erase_asks_before_it_deletes(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    refused = cli("contacts", "erase", str(zeb))
    assert refused.exit_code != 0 and "--yes" in refused.stderr
    assert db["contacts"].get(zeb)["email"] == EMAIL


def test_show_table_keeps_a_phone_extension(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    db.execute(
        "UPDATE contact_phones SET extension = '204' WHERE contact_id = ?", [zeb]
    )

    table = cli("contacts", "show", str(zeb))

    assert table.exit_code == 0, table.stderr
    assert "x204" in table.stdout


def test_export_data_into_a_missing_folder_is_one_clear_error(
    workspace, db, clock, cli, tmp_path
):
    zeb, _ = person_with_history(workspace, db, clock)

    result = cli("contacts", "export-data", str(zeb), "-o", str(tmp_path / "no" / "x"))

    assert result.exit_code == 1
    assert "does not exist" in result.stderr
