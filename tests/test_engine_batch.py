"""The runner's batched send path: phases, the consent recheck, crashes, failures.

A claimed batch of send steps is rendered first, recorded as 'sending' in one
transaction (outbox), sent, and recorded as sent in one more; a channel that is
not idempotent (the SMS provider) records each message on its own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from cxm_cli.channels.outbox import (
    OutboxChannel,
    contact_files,
    read_texts,
    texts_files,
)
from cxm_cli.clock import iso
from cxm_cli.contacts import set_consent
from cxm_cli.errors import ChannelError
from tests.support.engine import emit, only_sequences, outbound, run, timeline
from tests.support.fixtures import make_contact, update_settings

TEXT = """
trigger: lead.created
steps:
  - send: sms
    template: new-lead-text
"""

EMAIL = """
trigger: lead.created
steps:
  - send: email
    template: new-lead-email
"""


def _leads(db, clock, count: int) -> list[int]:
    ids = []
    for index in range(count):
        contact_id = make_contact(
            db,
            clock,
            first_name=f"Lead{index}",
            email=f"lead{index}@example.com",
            phone=f"+1512555{index:04d}",
        )
        emit(db, clock, contact_id, "lead.created")
        ids.append(contact_id)
    return ids


def _outbox_files(workspace) -> Counter:
    """Outbox messages per contact: text lines (one per message id) and
    ``.eml`` files (``<contact_id>-msg-<message_id>.eml``); hidden temporary
    files a killed write left are not messages."""
    counts = Counter(str(text["contact_id"]) for text in read_texts(workspace))
    counts.update(
        path.name.partition("-")[0]
        for path in workspace.outbox_dir.rglob("*.eml")
        if not path.name.startswith(".")
    )
    return counts


def _outbox_refuses(monkeypatch, contact_id: int):
    """Make the outbox fail (transiently) on one contact's texts; returns the
    real record function, to put back."""
    real_record = OutboxChannel._text_record

    def text_record(self, message, message_id):
        if message.contact_id == contact_id:
            raise ChannelError("outbox folder is read-only", transient=True)
        return real_record(self, message, message_id)

    monkeypatch.setattr(OutboxChannel, "_text_record", text_record)
    return real_record


def _text_lines_per_message(workspace) -> Counter:
    """Whole text lines per message id, as written (not deduplicated)."""
    counts: Counter = Counter()
    for path in texts_files(workspace):
        for line in path.read_bytes().split(b"\n"):
            try:
                counts[json.loads(line)["message_id"]] += 1
            except ValueError:
                continue  # a torn line, or the end of the file
    return counts


def test_a_batch_sends_each_step_once_with_its_whole_timeline(db, workspace, clock):
    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 6)

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"] * 6
    assert _outbox_files(workspace) == {str(c): 1 for c in contacts}
    for contact_id in contacts:
        [message] = outbound(db, contact_id)
        assert message["status"] == "sent" and message["event_id"]
        assert message["provider_id"] == f"outbox-msg-{message['id']:09d}"
        [text] = read_texts(workspace, contact_id)
        assert text["message_id"] == message["id"]
        assert text["provider_id"] == message["provider_id"]
        assert contact_files(workspace, contact_id) == []
        types = [t for t, _ in timeline(db, contact_id)]
        sent_at = types.index("message.sent")
        assert types[sent_at:] == [
            "message.sent",
            "stage.changed",
            "step.sent",
            "sequence.completed",
        ]


@pytest.mark.parametrize("connection", ["the runner's", "another"])
def test_an_opt_out_between_render_and_record_stops_only_that_send(
    db, workspace, clock, monkeypatch, connection
):
    """The batch was read before the STOP: only the recheck under the write
    lock can see it. Through another connection (another process) it is
    read again because that connection committed since."""
    from cxm_cli import messaging

    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 4)
    stopper = contacts[2]
    real_render = messaging.render_for

    def render_then_stop_arrives(workspace_, db_, contact, *args, **kwargs):
        rendered = real_render(workspace_, db_, contact, *args, **kwargs)
        if contact["id"] == stopper:
            writer = db if connection == "the runner's" else workspace.open_db()
            set_consent(writer, stopper, "sms", "opted_out", clock=clock, source="sms")
            if writer is not db:
                writer.close()
        return rendered

    monkeypatch.setattr(messaging, "render_for", render_then_stop_arrives)

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {c: "skipped" if c == stopper else "sent" for c in contacts}
    assert outbound(db, stopper) == []
    assert str(stopper) not in _outbox_files(workspace)
    skipped = [d for t, d in timeline(db, stopper) if t == "step.skipped"]
    assert "opted out" in skipped[0]["reason"]


CRASHING_RUN = """
import os, signal, sys
from pathlib import Path
from cxm_cli import messaging
from cxm_cli.clock import FakeClock
from cxm_cli.runner import run_once
from cxm_cli.workspace import load_workspace

real = messaging.record_sent_many

def record_then_die(db, *args, **kwargs):
    real(db, *args, **kwargs)
    # The sends recorded but not committed, files (being) written: kill -9.
    os.kill(os.getpid(), signal.SIGKILL)

import cxm_cli.batch_send
cxm_cli.batch_send.record_sent_many = record_then_die
workspace = load_workspace(Path(sys.argv[1]))
run_once(workspace, workspace.open_db(), FakeClock(sys.argv[2]))
"""


def test_kill_9_after_a_batch_of_outbox_writes_leaves_no_second_line(
    db, workspace, clock
):
    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 5)

    crashed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CRASHING_RUN),
            str(workspace.root),
            clock.now().isoformat(),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # Killed while the batch's files were being written: some or all are out.
    assert set(_outbox_files(workspace).values()) <= {1}
    assert set(_text_lines_per_message(workspace).values()) <= {1}
    statuses = Counter(m["status"] for m in outbound(db))
    assert statuses == {"sending": 5}

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"] * 5
    assert _outbox_files(workspace) == {str(c): 1 for c in contacts}
    # The takeover looked before appending: no message id is on two lines.
    lines = _text_lines_per_message(workspace)
    assert sorted(lines) == sorted(m["id"] for m in outbound(db))
    assert set(lines.values()) == {1}
    for contact_id in contacts:
        [message] = outbound(db, contact_id)
        assert message["status"] == "sent"
        assert [t for t, _ in timeline(db, contact_id)].count("message.sent") == 1


def test_outbox_and_an_sms_provider_in_one_batch(db, workspace, clock, sms_provider):
    workspace = sms_provider.configure(workspace)
    workspace = update_settings(workspace, {"rate_limits.sms_per_second": 0})
    only_sequences(workspace, text=TEXT, mail=EMAIL)
    contacts = _leads(db, clock, 3)

    report = run(workspace, db, clock)

    assert Counter(r.outcome for r in report.results) == {"sent": 6}
    assert len(sms_provider.messages) == 3
    for contact_id in contacts:
        messages = {m["channel"]: m for m in outbound(db, contact_id)}
        assert messages["sms"]["status"] == "sent"
        assert messages["sms"]["provider_id"].startswith("SM")
        assert messages["email"]["status"] == "sent"
        [eml] = contact_files(workspace, contact_id)
        assert eml.name == f"{contact_id}-msg-{messages['email']['id']:09d}.eml"


def test_a_message_that_cannot_be_recorded_leaves_no_row_and_stops_only_its_step(
    db, workspace, clock, monkeypatch
):
    from cxm_cli import messaging

    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 4)
    broken = contacts[2]
    real_decorate = messaging.decorate

    def decorate(workspace_, db_, message, contact, message_id):
        if contact["id"] == broken:
            raise RuntimeError("decorator broke")
        return real_decorate(workspace_, db_, message, contact, message_id)

    monkeypatch.setattr(messaging, "decorate", decorate)

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {c: "failed" if c == broken else "sent" for c in contacts}
    assert outbound(db, broken) == []
    assert str(broken) not in _outbox_files(workspace)
    for contact_id in contacts:
        if contact_id != broken:
            [message] = outbound(db, contact_id)
            assert message["status"] == "sent"
            assert message["provider_id"] == f"outbox-msg-{message['id']:09d}"


def test_a_provider_error_mid_batch_fails_only_that_step(
    db, workspace, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    workspace = update_settings(workspace, {"rate_limits.sms_per_second": 0})
    only_sequences(workspace, text=TEXT)
    contacts = _leads(db, clock, 3)
    run_results = []

    # The second provider call of the batch is refused for good.
    def fail_second(result):
        run_results.append(result)
        if len(run_results) == 1:
            sms_provider.fail_next(400, code=21211, message="Invalid To number")

    report = run(workspace, db, clock, on_result=fail_second)

    outcomes = [r.outcome for r in report.results]
    assert outcomes == ["sent", "failed", "sent"]
    failed = report.results[1].contact_id
    assert [m["status"] for m in outbound(db, failed)] == ["failed"]
    for contact_id in contacts:
        if contact_id != failed:
            assert [m["status"] for m in outbound(db, contact_id)] == ["sent"]


def test_an_outbox_write_error_mid_batch_fails_only_that_step(
    db, workspace, clock, monkeypatch
):
    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 4)
    broken = contacts[1]
    real_record = _outbox_refuses(monkeypatch, broken)

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {c: "retry" if c == broken else "sent" for c in contacts}
    assert [m["status"] for m in outbound(db, broken)] == ["failed"]
    assert str(broken) not in _outbox_files(workspace)
    for contact_id in contacts:
        if contact_id != broken:
            [message] = outbound(db, contact_id)
            assert message["status"] == "sent"
            assert message["provider_id"] == f"outbox-msg-{message['id']:09d}"
            types = [t for t, _ in timeline(db, contact_id)]
            assert types.count("message.sent") == types.count("step.sent") == 1
    deferred = [d for t, d in timeline(db, broken) if t == "step.deferred"]
    assert "read-only" in deferred[0]["reason"]

    clock.advance(hours=2)
    monkeypatch.setattr(OutboxChannel, "_text_record", real_record)
    assert [r.outcome for r in run(workspace, db, clock).results] == ["sent"]
    assert _outbox_files(workspace)[str(broken)] == 1


def test_a_folder_the_outbox_cannot_append_to_retries_its_texts_later(
    db, workspace, clock, monkeypatch
):
    from cxm_cli.channels import outbox

    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 3)
    real_append = outbox._append_many

    def full_disk(path, lines):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outbox, "_append_many", full_disk)
    report = run(workspace, db, clock)

    # One append carries the folder's texts: none of them went out.
    assert {r.outcome for r in report.results} == {"retry"}
    assert {r.detail for r in report.results} == {
        "the outbox cannot write data/outbox/0-999/texts.jsonl: No space left on device"
    }
    assert _outbox_files(workspace) == {}
    for contact_id in contacts:
        assert [m["status"] for m in outbound(db, contact_id)] == ["failed"]

    clock.advance(hours=2)
    monkeypatch.setattr(outbox, "_append_many", real_append)
    assert {r.outcome for r in run(workspace, db, clock).results} == {"sent"}
    assert _outbox_files(workspace) == {str(c): 1 for c in contacts}


def test_caps_count_the_sends_of_the_same_batch(db, workspace, clock):
    second = TEXT.replace("new-lead-text", "nudge-text")
    only_sequences(workspace, hello=TEXT, again=second)
    [contact_id] = _leads(db, clock, 1)

    report = run(workspace, db, clock)

    # sms_per_day = 1: the second text of the batch waits for tomorrow.
    assert sorted(r.outcome for r in report.results) == ["capped", "sent"]
    assert len(outbound(db, contact_id)) == 1


def test_a_hook_failing_on_one_send_fails_only_that_step(
    db, workspace, clock, monkeypatch
):
    from cxm_cli import events

    only_sequences(workspace, hello=TEXT)
    contacts = _leads(db, clock, 3)
    troubled = contacts[1]

    def hook(db_, event, clock_):
        if event.type == "message.sent" and event.contact_id == troubled:
            raise RuntimeError("a part of cxm broke")

    monkeypatch.setattr(events, "_HOOKS", [*events._HOOKS, ("test-broken", hook)])

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {c: "failed" if c == troubled else "sent" for c in contacts}
    failed = next(r for r in report.results if r.contact_id == troubled)
    assert "a part of cxm broke" in failed.detail
    for contact_id in contacts:
        types = [t for t, _ in timeline(db, contact_id)]
        assert types.count("message.sent") == (contact_id != troubled)


def test_a_tag_added_earlier_in_the_batch_shows_in_a_later_send(db, workspace, clock):
    only_sequences(
        workspace,
        a_tag="""
        trigger: lead.created
        steps:
          - add_tag: vip
        """,
        b_text="""
        trigger: lead.created
        steps:
          - send: sms
            text: "{% if 'vip' in tags %}VIP {% endif %}hello {{ first_name }}"
        """,
    )
    [contact_id] = _leads(db, clock, 1)
    kinds = [row[0] for row in db.execute("SELECT kind FROM due_steps ORDER BY id")]
    assert kinds == ["add_tag", "send"]

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["done", "sent"]
    [message] = outbound(db, contact_id)
    assert message["body"] == "VIP hello Lead0"


def test_a_send_earlier_in_the_batch_counts_towards_the_legal_limit(
    db, workspace, clock
):
    only_sequences(
        workspace,
        a_call="""
        trigger: lead.created
        caps: false
        steps:
          - voicemail: https://example.test/hello.mp3
        """,
        b_text="""
        trigger: lead.created
        caps: false
        steps:
          - send: sms
            template: new-lead-text
        """,
    )
    [contact_id] = _leads(db, clock, 1)
    db.execute("UPDATE contacts SET region = 'FL' WHERE id = ?", [contact_id])
    for hours in (3, 2):
        db.execute(
            "INSERT INTO messages (contact_id, channel, direction, address, body, "
            "status, at) VALUES (?, 'sms', 'outbound', '+15125550000', 'earlier', "
            "'sent', ?)",
            [contact_id, iso(clock.now() - timedelta(hours=hours))],
        )

    report = run(workspace, db, clock)

    # Florida: three texts or calls in 24 hours. The voicemail ran on its own
    # in the batch and was the third; the text, read with the batch before
    # it, must still be held back.
    outcomes = {r.sequence: r.outcome for r in report.results}
    assert outcomes == {"a-call": "sent", "b-text": "capped"}
    assert [m["channel"] for m in outbound(db, contact_id)] == [
        "sms",
        "sms",
        "voicemail",
    ]


def test_a_batch_texts_the_phone_a_single_send_would(db, workspace, clock):
    from cxm_cli.preview import preview_due

    only_sequences(workspace, hello=TEXT)
    work_and_mobile, switchboard, no_textable = _leads(db, clock, 3)
    phones = {
        work_and_mobile: [("+16175550190", "work", None, 1)]
        + [("+16175550191", "mobile", None, 0)],
        switchboard: [("+13125550204", "work", "204", 1)]
        + [("+13125550205", "home", None, 0)],
        no_textable: [("+13125550206", "work", "x12", 1)]
        + [("+13125550207", "fax", None, 0)],
    }
    for contact_id, rows in phones.items():
        db.execute("DELETE FROM contact_phones WHERE contact_id = ?", [contact_id])
        for phone, kind, extension, primary in rows:
            db.execute(
                "INSERT INTO contact_phones (contact_id, phone, extension, kind, "
                "is_primary, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [contact_id, phone, extension, kind, primary, iso(clock.now())],
            )
        db.execute(
            "UPDATE contacts SET phone = ? WHERE id = ?", [rows[0][0], contact_id]
        )
    db.conn.commit()
    expected = {work_and_mobile: "+16175550191", switchboard: "+13125550205"}

    # `cxm due` shows the same phone the runner then texts.
    previews = {row["contact_id"]: row for row in preview_due(workspace, db, clock)}
    assert {c: previews[c]["to"] for c in expected} == expected
    assert previews[no_textable]["to"] is None
    assert "will be skipped" in previews[no_textable]["why"]
    assert "no phone that can take texts" in previews[no_textable]["why"]
    rendered = preview_due(workspace, db, clock, render=True, project=False)
    assert {r["contact_id"]: r["to"] for r in rendered if r.get("to")} == expected

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {work_and_mobile: "sent", switchboard: "sent"} | {
        no_textable: "skipped"
    }
    for contact_id, address in expected.items():
        [message] = outbound(db, contact_id)
        assert message["address"] == address
    assert outbound(db, no_textable) == []
    skipped = [d for t, d in timeline(db, no_textable) if t == "step.skipped"]
    assert "no phone that can take texts" in skipped[0]["reason"]


def test_a_batch_does_not_text_a_number_its_other_holder_opted_out_of(
    db, workspace, clock, tmp_path
):
    # Finding 7: the import's "do not text" is Ann's, and the number is hers.
    from cxm_cli.importing import ImportOptions, import_file
    from cxm_cli.preview import preview_due

    only_sequences(workspace, hello=TEXT)
    for name, rows in (
        ("first", "Ann,ann@example.com,(312) 555-0101,Y\n"),
        (
            "second",
            "Zed,zed@example.com,(312) 555-0101,\n"
            "Dee,dee@example.com,(312) 555-0199,\n",
        ),
    ):
        path = tmp_path / f"{name}.csv"
        path.write_text("Name,Email,Phone,Do Not Text?\n" + rows, encoding="utf-8")
        options = ImportOptions(rejects_path=tmp_path / f"{name}.rejects.csv")
        import_file(workspace, db, path, clock=clock, options=options)
    ids = {
        row["email"]: row["id"] for row in db.query("SELECT id, email FROM contacts")
    }
    ann, zed, dee = (ids[f"{n}@example.com"] for n in ("ann", "zed", "dee"))

    previews = {row["contact_id"]: row for row in preview_due(workspace, db, clock)}
    assert "this number opted out of texts" in previews[zed]["why"]

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {ann: "skipped", zed: "skipped", dee: "sent"}
    assert outbound(db, zed) == [] and outbound(db, ann) == []
    assert [m["address"] for m in outbound(db)] == ["+13125550199"]
    skipped = [d for t, d in timeline(db, zed) if t == "step.skipped"]
    assert skipped[0]["reason"] == (
        f"this number opted out of texts (shared with contact {ann})"
    )


def test_a_runner_told_to_stop_hands_back_the_batch_it_claimed_ahead(
    db, workspace, clock
):
    # A batch's last transaction also claims the next batch; a stop that
    # comes right after must leave those steps pending, not claimed for a
    # whole lease.
    only_sequences(workspace, hello=TEXT)
    workspace = update_settings(workspace, {"runner.batch_size": 3})
    _leads(db, clock, 7)
    reported = []

    report = run(
        workspace,
        db,
        clock,
        on_result=reported.append,
        stop=lambda: len(reported) >= 3,
    )

    assert [r.outcome for r in report.results] == ["sent"] * 3
    statuses = Counter(
        row["status"] for row in db.query("SELECT status FROM due_steps")
    )
    assert statuses == {"done": 3, "pending": 4}

    rest = run(workspace, db, clock)
    assert [r.outcome for r in rest.results] == ["sent"] * 4
    assert len(read_texts(workspace)) == 7


def test_a_batch_whose_send_failed_claims_the_next_one_afterwards(
    db, workspace, clock, monkeypatch
):
    # The claim made inside a batch's last transaction goes with it when that
    # transaction is rolled back (a send failed): the next batch is claimed
    # again after, and every step is run once.
    only_sequences(workspace, hello=TEXT)
    workspace = update_settings(workspace, {"runner.batch_size": 2})
    contacts = _leads(db, clock, 5)
    broken = contacts[0]
    _outbox_refuses(monkeypatch, broken)

    report = run(workspace, db, clock)

    outcomes = Counter((r.contact_id, r.outcome) for r in report.results)
    assert outcomes == {(c, "retry" if c == broken else "sent"): 1 for c in contacts}
    assert not list(db.query("SELECT id FROM due_steps WHERE status = 'claimed'"))
    assert len(read_texts(workspace)) == 4


def test_a_batch_that_waited_past_half_its_lease_extends_its_claims(
    db, workspace, clock, monkeypatch
):
    # A batch claimed moments ago only checks its claims; one whose lease is
    # half gone (a long rate-limit wait) extends them before it sends.
    only_sequences(workspace, hello=TEXT)
    _leads(db, clock, 2)
    import cxm_cli.batch_send as batch_send

    real_read = batch_send.SendBatch.read

    def slow_read(self, rows):
        real_read(self, rows)
        clock.advance(seconds=200)  # of a 300 s lease

    monkeypatch.setattr(batch_send.SendBatch, "read", slow_read)
    leases = []
    real_insert = batch_send.record_sending_many

    def record_sending_many(workspace, db, clock, items, **options):
        leases.extend(
            row["lease_until"]
            for row in db.query(
                "SELECT lease_until FROM due_steps WHERE status = 'claimed'"
            )
        )
        return real_insert(workspace, db, clock, items, **options)

    monkeypatch.setattr(batch_send, "record_sending_many", record_sending_many)

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"] * 2
    assert leases and all(
        lease == iso(clock.now() + timedelta(seconds=300)) for lease in leases
    )
