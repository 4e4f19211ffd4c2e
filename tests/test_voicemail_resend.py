"""Voicemail drops from the runner: one line per message id, no stuck rows.

A runner that dies after the provider call (or the outbox write) and before
recording the send leaves its due step claimed and its message 'sending'.
The next runner must take that row over, not add a second one, and the
outbox must not write the drop a second time.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cxm_cli.channels.outbox import OutboxChannel, read_texts, texts_files
from cxm_cli.channels.twilio import TwilioChannel
from cxm_cli.contacts import set_consent
from tests.support.engine import emit, only_sequences, outbound, run, timeline
from tests.support.fixtures import make_contact

AUDIO = "https://example.test/hello.mp3"

VOICEMAIL = f"""
trigger: lead.created
steps:
  - voicemail: {AUDIO}
"""


class RunnerDied(BaseException):
    """Stands for a kill -9: nothing in cxm catches it, nothing is recorded."""


def _lead(db, clock) -> int:
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    return contact_id


def _voicemail_lines(workspace) -> Counter:
    """Whole voicemail lines per message id, as written (not deduplicated)."""
    counts: Counter = Counter()
    for path in texts_files(workspace):
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the end of the file
            if record["kind"] == "voicemail":
                counts[record["message_id"]] += 1
    return counts


def _die_after_first_call(monkeypatch, channel_class) -> list:
    """Make ``channel_class.send_voicemail`` do its work, then kill the
    runner, once; returns the results of every real call."""
    real = channel_class.send_voicemail
    results = []

    def send_then_die(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        results.append(result)
        if len(results) == 1:
            raise RunnerDied
        return result

    monkeypatch.setattr(channel_class, "send_voicemail", send_then_die)
    return results


def _die_then_rerun(workspace, db, clock):
    with pytest.raises(RunnerDied):
        run(workspace, db, clock)
    [left] = outbound(db)
    assert left["status"] == "sending"

    # Past the dead runner's lease on the step, so the next run claims it again.
    clock.advance(minutes=10)
    report = run(workspace, db, clock)
    return left, report


def test_a_voicemail_step_writes_one_line_with_its_message_id(db, workspace, clock):
    only_sequences(workspace, drop=VOICEMAIL)
    contact_id = _lead(db, clock)

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"]
    [message] = outbound(db, contact_id)
    assert (message["channel"], message["status"]) == ("voicemail", "sent")
    assert message["provider_id"] == f"outbox-msg-{message['id']:09d}"
    [line] = read_texts(workspace, contact_id)
    assert line["kind"] == "voicemail" and line["audio_url"] == AUDIO
    assert line["message_id"] == message["id"]
    assert line["provider_id"] == message["provider_id"]
    [sent] = [data for kind, data in timeline(db, contact_id) if kind == "message.sent"]
    assert sent["message_id"] == message["id"]
    assert sent["sequence"] == "drop" and sent["channel"] == "voicemail"
    assert message["event_id"] is not None


def test_a_rerun_after_the_outbox_write_takes_the_row_over(
    db, workspace, clock, monkeypatch
):
    only_sequences(workspace, drop=VOICEMAIL)
    contact_id = _lead(db, clock)
    _die_after_first_call(monkeypatch, OutboxChannel)

    left, report = _die_then_rerun(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"]
    [message] = outbound(db, contact_id)
    assert message["id"] == left["id"]
    assert message["status"] == "sent" and message["event_id"] is not None
    assert _voicemail_lines(workspace) == {left["id"]: 1}
    kinds = [kind for kind, _ in timeline(db, contact_id)]
    assert kinds.count("message.sent") == 1 and "step.sent" in kinds


def test_a_rerun_takes_the_row_over_with_a_provider_that_is_not_idempotent(
    db, workspace, clock, monkeypatch, sms_provider
):
    workspace = sms_provider.configure(workspace)
    only_sequences(workspace, drop=VOICEMAIL)
    contact_id = _lead(db, clock)
    calls = _die_after_first_call(monkeypatch, TwilioChannel)

    left, report = _die_then_rerun(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"]
    [message] = outbound(db, contact_id)
    assert message["id"] == left["id"] and message["status"] == "sent"
    # The provider cannot tell a resend: it is called again, as a text is.
    assert len(sms_provider.calls) == len(calls) == 2
    assert message["provider_id"] == calls[-1].provider_id
    assert read_texts(workspace) == []
    kinds = [kind for kind, _ in timeline(db, contact_id)]
    assert kinds.count("message.sent") == 1
    # The owner can see that this drop may have reached the phone twice.
    [resent] = [d for kind, d in timeline(db, contact_id) if kind == "message.resent"]
    assert resent["message_id"] == left["id"] and resent["channel"] == "voicemail"


def test_a_first_claim_never_takes_over_another_steps_row(db, workspace, clock):
    only_sequences(workspace, drop=VOICEMAIL)
    first = _lead(db, clock)
    run(workspace, db, clock)
    second = make_contact(db, clock, email="bo@example.com", phone="+15125550102")
    emit(db, clock, second, "lead.created")

    run(workspace, db, clock)

    messages = outbound(db)
    assert [m["contact_id"] for m in messages] == [first, second]
    assert {m["status"] for m in messages} == {"sent"}
    assert _voicemail_lines(workspace) == {m["id"]: 1 for m in messages}


def test_a_contact_who_opted_out_of_voicemail_gets_no_drop(db, workspace, clock):
    only_sequences(workspace, drop=VOICEMAIL)
    contact_id = make_contact(db, clock)
    set_consent(db, contact_id, "voicemail", "opted_out", clock=clock, source="test")
    emit(db, clock, contact_id, "lead.created")

    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["skipped"]
    assert outbound(db) == []
    assert read_texts(workspace) == []


def test_the_outbox_writes_a_resent_drop_once(workspace):
    channel = OutboxChannel(workspace, "sms")

    first = channel.send_voicemail("+15125550101", AUDIO, contact_id=7, message_id=41)
    again = channel.send_voicemail(
        "+15125550101", AUDIO, contact_id=7, message_id=41, resend=True
    )

    assert again.provider_id == first.provider_id == "outbox-msg-000000041"
    assert _voicemail_lines(workspace) == {41: 1}


def test_a_dry_run_checks_consent_and_writes_nothing(db, workspace, clock):
    from cxm_cli.engine_steps import run_voicemail
    from cxm_cli.messaging import ConsentRefused
    from cxm_cli.steps import StepContext

    contact_id = make_contact(db, clock)
    contact = db["contacts"].get(contact_id)

    def dry_run():
        step = {"kind": "voicemail", "voicemail": AUDIO}
        ctx = StepContext(db, workspace, clock, contact, {}, step, dry_run=True)
        return run_voicemail(ctx)

    assert dry_run().detail == f"would drop voicemail {AUDIO}"
    set_consent(db, contact_id, "voicemail", "opted_out", clock=clock, source="test")
    with pytest.raises(ConsentRefused, match="opted out of voicemail"):
        dry_run()
    assert outbound(db) == [] and read_texts(workspace) == []


def test_a_text_sent_again_after_a_dead_runner_is_on_the_timeline(
    db, workspace, clock, monkeypatch, sms_provider
):
    workspace = sms_provider.configure(workspace)
    only_sequences(
        workspace,
        hello="""
        trigger: lead.created
        steps:
          - send: sms
            text: Hi there
        """,
    )
    contact_id = _lead(db, clock)
    real = TwilioChannel.send
    calls = []

    def send_then_die(self, *args, **kwargs):
        calls.append(real(self, *args, **kwargs))
        if len(calls) == 1:
            raise RunnerDied
        return calls[-1]

    monkeypatch.setattr(TwilioChannel, "send", send_then_die)

    left, report = _die_then_rerun(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"]
    assert len(sms_provider.messages) == 2
    entries = timeline(db, contact_id)
    [resent] = [d for kind, d in entries if kind == "message.resent"]
    assert resent == {"message_id": left["id"], "channel": "sms"}
    assert [kind for kind, _ in entries].count("message.sent") == 1
