"""The inbox of open conversations, and answering from the terminal."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser

from cxm_cli.channels.outbox import contact_files
from cxm_cli.inbound import record_inbound
from cxm_cli.store import write_transaction
from tests.support.fixtures import make_contact


def person(db, clock, n: int, name: str) -> int:
    return make_contact(
        db,
        clock,
        first_name=name,
        email=f"{name.lower()}@example.com",
        phone=f"+151255501{n:02d}",
    )


def wrote(workspace, db, clock, contact_id, text, channel="sms", **extra):
    return record_inbound(
        workspace, db, clock, channel=channel, text=text, contact_id=contact_id, **extra
    )


def ids(rows):
    return [row["contact_id"] for row in rows]


def test_inbox_lists_who_waits_longest_first(workspace, db, clock, cli):
    ana = person(db, clock, 1, "Ana")
    bo = person(db, clock, 2, "Bo")
    cy = person(db, clock, 3, "Cy")
    di = person(db, clock, 4, "Di")
    ed = person(db, clock, 5, "Ed")
    flo = person(db, clock, 6, "Flo")

    wrote(workspace, db, clock, ana, "Is Tuesday free?")
    clock.advance(minutes=30)
    wrote(
        workspace,
        db,
        clock,
        di,
        "Away until Monday",
        channel="email",
        kind="auto_reply",
    )
    wrote(workspace, db, clock, ed, "STOP")
    wrote(workspace, db, clock, flo, "please stop texting me")
    clock.advance(minutes=90)
    wrote(
        workspace,
        db,
        clock,
        bo,
        "Do you take insurance?",
        channel="email",
        subject="Insurance",
    )
    wrote(workspace, db, clock, cy, "Can I move my visit?")
    clock.advance(minutes=30)

    listed = cli("inbox", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = listed.json()
    assert ids(rows) == [ana, flo, bo, cy]
    assert rows[0]["waiting"] == "2h 30m" and rows[0]["channel"] == "sms"
    assert rows[1]["flag"] == "possible_opt_out"
    assert rows[2]["last_words"] == "Do you take insurance?"

    assert ids(cli("inbox", "--channel", "email", "--json").json()) == [bo]
    assert ids(cli("inbox", "--older-than", "2h", "--json").json()) == [ana, flo]
    table = cli("inbox")
    assert "Is Tuesday free?" in table.stdout


def test_automated_messages_do_not_answer_a_conversation(workspace, db, clock, cli):
    ana = person(db, clock, 1, "Ana")
    wrote(workspace, db, clock, ana, "Question?")
    clock.advance(minutes=5)
    with write_transaction(db):
        db["messages"].insert(
            {
                "contact_id": ana,
                "channel": "sms",
                "direction": "outbound",
                "status": "sent",
                "body": "Reminder",
                "due_step_id": 99,
                "at": "2026-03-02T15:05:00.000000Z",
            }
        )
    assert ids(cli("inbox", "--json").json()) == [ana]


def test_reply_answers_on_the_channel_they_used(workspace, db, clock, cli):
    ana = person(db, clock, 1, "Ana")
    wrote(workspace, db, clock, ana, "Is Tuesday free?")
    clock.advance(minutes=10)

    replied = cli("reply", "ana@example.com", "--text", "Yes, 3pm works!", "--json")

    assert replied.exit_code == 0, replied.stderr
    assert replied.json()["channel"] == "sms"
    assert cli("inbox", "--json").json() == []
    story = cli("timeline", str(ana), "--json").json()
    sent = [e for e in story["entries"] if e["type"] == "message.sent"]
    assert sent[-1]["body"] == "Yes, 3pm works!"
    assert sent[-1]["data"]["automated"] is False
    assert sent[-1]["source"] == "reply"


def test_email_reply_threads_under_their_message(workspace, db, clock, cli):
    bo = person(db, clock, 2, "Bo")
    wrote(
        workspace,
        db,
        clock,
        bo,
        "Do you take insurance?",
        channel="email",
        subject="Insurance",
        provider_id="<q-1@example.com>",
    )

    replied = cli("reply", str(bo), "--text", "We do: Delta and Aetna.")

    assert replied.exit_code == 0, replied.stderr
    eml = [path for path in contact_files(workspace, bo) if path.suffix == ".eml"][-1]
    email = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert email["Subject"] == "Re: Insurance"
    assert email["In-Reply-To"] == "<q-1@example.com>"


def test_snippets_and_their_errors(workspace, db, clock, cli):
    ana = person(db, clock, 1, "Ana")
    wrote(workspace, db, clock, ana, "When are you open?")
    (workspace.root / "snippets.toml").write_text(
        'hours = "We are open Mon-Fri 8-5."\n'
        '[parking]\ntext = "Park behind the building."\nsubject = "Parking"\n',
        encoding="utf-8",
    )

    unknown = cli("reply", str(ana), "--snippet", "prices")
    assert unknown.exit_code != 0
    assert "hours" in unknown.stderr and "parking" in unknown.stderr
    both = cli("reply", str(ana), "--snippet", "hours", "--text", "hi")
    assert both.exit_code != 0 and "exactly one" in both.stderr

    sent = cli("reply", str(ana), "--snippet", "hours", "--json")
    assert sent.exit_code == 0, sent.stderr
    body = db.execute(
        "SELECT body FROM messages WHERE contact_id = ? AND direction = 'outbound'",
        [ana],
    ).fetchone()[0]
    assert body == "We are open Mon-Fri 8-5."


def test_reply_refuses_someone_who_opted_out(workspace, db, clock, cli):
    ed = person(db, clock, 5, "Ed")
    wrote(workspace, db, clock, ed, "Question?")
    wrote(workspace, db, clock, ed, "STOP")
    refused = cli("reply", str(ed), "--text", "Sorry to see you go")
    assert refused.exit_code != 0 and "opted out" in refused.stderr
    outbound = db.execute(
        "SELECT COUNT(*) FROM messages WHERE direction = 'outbound'"
    ).fetchone()[0]
    assert outbound == 0


def test_done_closes_a_conversation(workspace, db, clock, cli):
    ana = person(db, clock, 1, "Ana")
    wrote(workspace, db, clock, ana, "Call me?")
    closed = cli("inbox", "done", str(ana))
    assert closed.exit_code == 0, closed.stderr
    assert cli("inbox", "--json").json() == []
    wrote(workspace, db, clock, ana, "Hello again")
    assert ids(cli("inbox", "--json").json()) == [ana]


def test_an_unknown_channel_is_refused(workspace, db, clock, cli):
    ed = person(db, clock, 5, "Ed")
    wrote(workspace, db, clock, ed, "Hello?", channel="webchat")

    pigeon = cli("inbox", "--channel", "pigeon")
    assert pigeon.exit_code != 0
    assert "pigeon" in pigeon.stderr and "sms" in pigeon.stderr
    # A channel messages really came in on is known, whatever its name.
    assert ids(cli("inbox", "--channel", "webchat", "--json").json()) == [ed]
    assert cli("inbox", "--channel", "SMS", "--json").json() == []


def test_a_batch_with_a_bad_item_records_nothing_and_names_it(
    workspace, db, clock, cli
):
    ed = person(db, clock, 5, "Ed")
    batch = [
        {"contact": str(ed), "text": "first"},
        {"contact": str(ed), "text": "second"},
        {"contact": str(ed), "text": "third", "at": "last tuesday"},
    ]
    refused = cli("inbox", "record", "-", input=json.dumps(batch))
    assert refused.exit_code != 0
    assert "item 3 (index 2)" in refused.stderr and "field at" in refused.stderr
    inbound = "SELECT COUNT(*) FROM messages WHERE direction = 'inbound'"
    assert db.execute(inbound).fetchone()[0] == 0

    batch[2] = {"contact": "999", "text": "third"}
    nobody = cli("inbox", "record", "-", input=json.dumps(batch))
    assert nobody.exit_code != 0
    assert "item 3 (index 2)" in nobody.stderr and "field contact" in nobody.stderr
    assert db.execute(inbound).fetchone()[0] == 0

    batch[2] = {"contact": str(ed), "text": "third", "mood": "happy"}
    unknown = cli("inbox", "record", "-", input=json.dumps(batch))
    assert unknown.exit_code != 0 and "mood" in unknown.stderr

    batch[2] = {"contact": str(ed), "text": "third"}
    recorded = cli("inbox", "record", "-", "--json", input=json.dumps(batch))
    assert recorded.exit_code == 0, recorded.stderr
    assert len(recorded.json()) == 3
    assert db.execute(inbound).fetchone()[0] == 3


def test_record_from_options_names_the_option(workspace, db, clock, cli):
    result = cli("inbox", "record", "--contact", "99999", "--text", "hi")

    assert result.exit_code != 0
    assert "--contact: no contact with id 99999" in result.stderr
    assert "stdin" not in result.stderr and "item 1" not in result.stderr


def test_an_empty_message_is_not_a_reply(workspace, db, clock, cli):
    ed = person(db, clock, 6, "Ed")
    inbound = "SELECT COUNT(*) FROM messages WHERE direction = 'inbound'"

    blank = cli("inbox", "record", "--contact", str(ed), "--text", "  ")
    assert blank.exit_code != 0 and "--text is empty" in blank.stderr

    no_text = cli("inbox", "record", "-", input=json.dumps({"contact": str(ed)}))
    assert no_text.exit_code != 0
    assert "item 1 (index 0): field text is empty" in no_text.stderr
    assert db.execute(inbound).fetchone()[0] == 0

    said = cli("inbox", "record", "--contact", str(ed), "--text", "hi")
    assert said.exit_code == 0, said.stderr
    assert db.execute(inbound).fetchone()[0] == 1
