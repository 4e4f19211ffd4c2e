"""Channels against real loopback servers: what is sent and how errors read."""

from __future__ import annotations

import json
import multiprocessing
import socket
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from cxm_cli.channels import OutboundMessage, get_channel
from cxm_cli.channels.outbox import (
    OutboxChannel,
    contact_files,
    read_texts,
    remove_text_lines,
    texts_path,
)
from cxm_cli.channels.smtp import SmtpChannel
from cxm_cli.channels.twilio import TwilioChannel, send_voicemail
from cxm_cli.errors import ChannelError, ConfigError
from tests.support.fixtures import update_settings


def text_to(
    number: str = "+15125550101", body: str = "Hello from the test"
) -> OutboundMessage:
    return OutboundMessage(channel="sms", to=number, body=body, contact_id=3)


def email_to(address: str = "ana@example.com") -> OutboundMessage:
    return OutboundMessage(
        channel="email",
        to=address,
        subject="Your visit",
        body="See you soon.",
        contact_id=3,
        headers={"Message-ID": "<test-1@example.com>"},
    )


@pytest.fixture
def silent_port():
    """A port that accepts connections but never answers (for timeouts)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- choosing


def test_outbox_is_the_default_for_both_kinds(workspace):
    assert isinstance(get_channel(workspace, "email"), OutboxChannel)
    assert isinstance(get_channel(workspace, "sms"), OutboxChannel)


def test_configured_channels_are_built(workspace, smtp_server, sms_provider):
    workspace = smtp_server.configure(workspace)
    workspace = sms_provider.configure(workspace)
    assert isinstance(get_channel(workspace, "email"), SmtpChannel)
    assert isinstance(get_channel(workspace, "sms"), TwilioChannel)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"channels.sms": "carrier-pigeon"}, "not one of outbox, twilio"),
        ({"channels.email": "twilio"}, "not one of outbox, smtp"),
        ({"channels.sms": "twilio"}, "CXM_SMS_ACCOUNT_SID and CXM_SMS_AUTH_TOKEN"),
        ({"channels.email": "smtp", "smtp.security": "tls13"}, "starttls"),
        ({"channels.email": "smtp", "smtp.from_address": "nobody"}, "from_address"),
    ],
)
def test_bad_channel_settings_are_config_errors(workspace, settings, problem):
    workspace = update_settings(workspace, settings)
    kind = "sms" if "channels.sms" in settings else "email"
    with pytest.raises(ConfigError, match=problem):
        get_channel(workspace, kind)


def test_unknown_kind_is_refused(workspace):
    with pytest.raises(ConfigError, match="unknown channel"):
        get_channel(workspace, "pager")


# ---------------------------------------------------------------- outbox


def test_outbox_texts_are_lines_of_the_folders_texts_file(workspace):
    outbox = get_channel(workspace, "sms")
    ids = {outbox.send(text_to()).provider_id for _ in range(25)}

    texts = read_texts(workspace, 3)
    assert len(ids) == 25 and {text["provider_id"] for text in texts} == ids
    assert texts_path(workspace, 3) == workspace.outbox_dir / "0-999" / "texts.jsonl"
    # The shared file is no one contact's own file.
    assert contact_files(workspace, 3) == []


def test_outbox_email_is_a_readable_eml(workspace):
    result = get_channel(workspace, "email").send(email_to())

    [path] = [path for path in contact_files(workspace, 3) if path.suffix == ".eml"]
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["To"] == "ana@example.com"
    assert parsed["Subject"] == "Your visit"
    assert parsed["Message-ID"] == "<test-1@example.com>" == result.provider_id
    assert "Bright Smile Dental" in parsed["From"]
    assert parsed.get_body(("plain",)).get_content().strip() == "See you soon."


def test_outbox_without_a_contact_uses_its_own_folder(workspace):
    message = text_to()
    message.contact_id = None
    get_channel(workspace, "sms").send(message)
    [line] = (
        (workspace.outbox_dir / "no-contact" / "texts.jsonl")
        .read_bytes()
        .split(b"\n")[:-1]
    )
    assert json.loads(line)["contact_id"] is None


def _raw_lines(workspace, contact_id: int = 3) -> list[bytes]:
    data = texts_path(workspace, contact_id).read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def test_outbox_text_lines_are_appended_in_order_and_parse(workspace):
    outbox = OutboxChannel(workspace, "sms")
    for message_id in range(1, 6):
        outbox.send(text_to(body=f"Line\nnumber {message_id}"), message_id=message_id)

    records = [json.loads(line) for line in _raw_lines(workspace)]
    assert [record["message_id"] for record in records] == [1, 2, 3, 4, 5]
    assert records[1]["provider_id"] == "outbox-msg-000000002"
    assert records[1]["body"] == "Line\nnumber 2"
    assert {record["kind"] for record in records} == {"text"}
    assert all(record["written_at"].endswith("Z") for record in records)
    assert read_texts(workspace) == records


def test_a_torn_last_line_is_skipped_and_the_next_starts_a_line(workspace):
    outbox = OutboxChannel(workspace, "sms")
    outbox.send(text_to(), message_id=1)
    path = texts_path(workspace, 3)
    torn = b'{"provider_id":"outbox-msg-000000002","message_id":2,"kind":"te'
    with path.open("ab") as killed_writer:
        killed_writer.write(torn)

    outbox.send(text_to(), message_id=3)

    lines = _raw_lines(workspace)
    assert lines[1] == torn
    assert json.loads(lines[2])["message_id"] == 3
    assert [text["message_id"] for text in read_texts(workspace, 3)] == [1, 3]


def test_a_resent_message_id_already_written_is_not_written_again(workspace):
    outbox = OutboxChannel(workspace, "sms")
    first = outbox.send(text_to(), message_id=7)
    again = text_to()
    again.resend = True

    resent = outbox.send(again, message_id=7)

    assert resent.provider_id == first.provider_id == "outbox-msg-000000007"
    assert len(_raw_lines(workspace)) == 1
    # A resend the dead runner never got to write is written.
    outbox.send(again, message_id=8)
    assert [json.loads(line)["message_id"] for line in _raw_lines(workspace)] == [
        7,
        8,
    ]
    # Without the mark the channel does not look: read_texts counts it once.
    outbox.send(text_to(), message_id=7)
    assert len(_raw_lines(workspace)) == 3
    assert [text["message_id"] for text in read_texts(workspace)] == [8, 7]


def test_erasing_removes_only_that_contacts_lines(workspace, db, clock):
    from cxm_cli.privacy import erase_contact
    from tests.support.fixtures import make_contact

    ana = make_contact(db, clock, first_name="Ana", phone="+15125550101")
    bo = make_contact(
        db, clock, first_name="Bo", email="bo@example.com", phone="+15125550102"
    )
    outbox = OutboxChannel(workspace, "sms")
    for number in range(3):
        for contact_id, phone in ((ana, "+15125550101"), (bo, "+15125550102")):
            message = text_to(phone, body=f"Reminder {number}")
            message.contact_id = contact_id
            outbox.send(message, message_id=number * 2 + contact_id)
    path = texts_path(workspace, ana)
    before = path.read_bytes().split(b"\n")[:-1]
    with path.open("ab") as killed_writer:
        killed_writer.write(b'{"provider_id":"x","message_id":99,"kind":"text",')
        killed_writer.write(b'"contact_id":%d,"to":"+1' % ana)

    result = erase_contact(workspace, db, ana, clock=clock)

    assert result.outbox_lines_removed == 4
    assert result.as_dict()["outbox_lines_removed"] == 4
    kept = [line for line in before if json.loads(line)["contact_id"] == bo]
    assert len(kept) == 3
    assert path.read_bytes() == b"".join(line + b"\n" for line in kept)
    assert read_texts(workspace, ana) == []
    assert not list(path.parent.glob(".*.tmp"))
    # The lock and the file still work for the next append.
    outbox.send(text_to("+15125550102"), message_id=50)
    assert len(read_texts(workspace)) == 4


def test_removing_every_line_removes_the_file(workspace):
    OutboxChannel(workspace, "sms").send(text_to(), message_id=1)
    path = texts_path(workspace, 3)
    assert remove_text_lines(path, lambda line, record: True) == 1
    assert not path.exists()
    assert read_texts(workspace) == []


def _append_texts(root: str, first_id: int, count: int) -> None:
    from cxm_cli.workspace import load_workspace

    outbox = OutboxChannel(load_workspace(Path(root)), "sms")
    for message_id in range(first_id, first_id + count):
        outbox.send(text_to(body="x" * 300), message_id=message_id)


def test_two_processes_appending_to_one_folder_leave_whole_lines(workspace):
    spawn = multiprocessing.get_context("spawn")
    writers = [
        spawn.Process(target=_append_texts, args=(str(workspace.root), first, 200))
        for first in (1, 1001)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0

    records = [json.loads(line) for line in _raw_lines(workspace)]
    assert len(records) == 400
    ids = sorted(record["message_id"] for record in records)
    assert ids == [*range(1, 201), *range(1001, 1201)]


# ---------------------------------------------------------------- smtp


def test_smtp_delivers_headers_and_html_part(workspace, smtp_server):
    workspace = update_settings(
        smtp_server.configure(workspace), {"smtp.reply_to": "desk@example.com"}
    )
    message = email_to()
    message.html_body = "<p>See you soon.</p>"
    message.headers["In-Reply-To"] = "<their-1@example.net>"

    result = get_channel(workspace, "email").send(message)

    [mail] = smtp_server.messages
    assert mail.mail_from == "hello@example.com"
    assert mail.message["Reply-To"] == "desk@example.com"
    assert mail.message["In-Reply-To"] == "<their-1@example.net>"
    assert mail.message.get_body(("html",)).get_content().strip() == (
        "<p>See you soon.</p>"
    )
    assert result.provider_id == "<test-1@example.com>"


def test_smtp_unreachable_server_is_transient(workspace):
    workspace = update_settings(
        workspace,
        {
            "channels.email": "smtp",
            "smtp.host": "127.0.0.1",
            "smtp.port": closed_port(),
            "smtp.security": "none",
        },
    )
    with pytest.raises(ChannelError, match="cannot reach") as error:
        get_channel(workspace, "email").send(email_to())
    assert error.value.transient


def test_smtp_silent_server_times_out_as_transient(workspace, silent_port):
    workspace = update_settings(
        workspace,
        {
            "channels.email": "smtp",
            "smtp.host": "127.0.0.1",
            "smtp.port": silent_port,
            "smtp.security": "none",
            "smtp.timeout_seconds": 0.5,
        },
    )
    with pytest.raises(ChannelError) as error:
        get_channel(workspace, "email").send(email_to())
    assert error.value.transient


def test_starttls_against_a_plain_server_says_what_to_check(workspace, smtp_server):
    workspace = update_settings(
        smtp_server.configure(workspace), {"smtp.security": "starttls"}
    )
    with pytest.raises(ChannelError) as error:
        get_channel(workspace, "email").send(email_to())
    assert error.value.transient
    assert "security" in (error.value.hint or "")
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("code", "transient"), [(421, True), (452, True), (554, False)]
)
def test_smtp_reply_codes_decide_retry(workspace, smtp_server, code, transient):
    workspace = smtp_server.configure(workspace)
    smtp_server.fail_next(code)

    with pytest.raises(ChannelError) as error:
        get_channel(workspace, "email").send(email_to())

    assert error.value.transient is transient
    assert error.value.provider_code == str(code)
    # The failure was for one message only; the next goes through.
    get_channel(workspace, "email").send(email_to())
    assert len(smtp_server.messages) == 1


# ---------------------------------------------------------------- twilio


def test_twilio_request_carries_auth_and_form(workspace, sms_provider):
    workspace = update_settings(
        sms_provider.configure(workspace),
        {"twilio.status_callback_url": "https://cxm.example.test/twilio/status"},
    )

    result = get_channel(workspace, "sms").send(text_to(body="Hi Ana, café at 3? €5"))

    [request] = sms_provider.requests
    assert request.username == sms_provider.account_sid
    assert request.password == sms_provider.auth_token
    assert request.form == {
        "To": "+15125550101",
        "From": sms_provider.from_number,
        "Body": "Hi Ana, café at 3? €5",
        "StatusCallback": "https://cxm.example.test/twilio/status",
    }
    assert result.provider_id == request.sid and result.provider_id.startswith("SM")
    assert sms_provider.messages == [request]


@pytest.mark.parametrize(
    ("status", "code", "transient", "opt_out"),
    [
        (429, 20429, True, False),
        (500, None, True, False),
        (502, None, True, False),
        (400, 21211, False, False),
        (400, 21614, False, False),
        (400, 21610, False, True),
        (401, 20003, False, False),
    ],
)
def test_twilio_errors_are_classified(
    workspace, sms_provider, status, code, transient, opt_out
):
    workspace = sms_provider.configure(workspace)
    sms_provider.fail_next(status, code=code, message="Provider says no")

    with pytest.raises(ChannelError) as error:
        get_channel(workspace, "sms").send(text_to())

    assert error.value.transient is transient
    assert error.value.opt_out is opt_out
    assert error.value.provider_code == str(code if code is not None else status)
    assert "Provider says no" in error.value.message


def test_twilio_failures_last_only_as_long_as_told(workspace, sms_provider):
    workspace = sms_provider.configure(workspace)
    sms_provider.fail_next(503, count=2)
    channel = get_channel(workspace, "sms")

    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(channel.send(text_to()).provider_id[:2])
        except ChannelError as exc:
            outcomes.append(exc.transient)

    assert outcomes == [True, True, "SM"]


def test_twilio_unreachable_and_silent_servers_are_transient(
    workspace, sms_provider, silent_port
):
    workspace = sms_provider.configure(workspace)
    for base_url in (
        f"http://127.0.0.1:{closed_port()}",
        f"http://127.0.0.1:{silent_port}",
    ):
        configured = update_settings(
            workspace, {"twilio.base_url": base_url, "twilio.timeout_seconds": 0.5}
        )
        with pytest.raises(ChannelError) as error:
            get_channel(configured, "sms").send(text_to())
        assert error.value.transient, base_url


def test_voicemail_drop_posts_a_call(workspace, sms_provider):
    workspace = sms_provider.configure(workspace)

    result = send_voicemail(
        workspace, "+15125550101", "https://example.test/vm.mp3?a=1&b=2"
    )

    [request] = sms_provider.requests
    assert request.path.endswith(f"/Accounts/{sms_provider.account_sid}/Calls.json")
    assert request.form["To"] == "+15125550101"
    assert request.form["From"] == sms_provider.from_number
    assert request.form["Twiml"] == (
        "<Response><Play>https://example.test/vm.mp3?a=1&amp;b=2</Play></Response>"
    )
    assert result.provider_id == request.sid and request.sid.startswith("CA")
    assert sms_provider.calls == [request] and sms_provider.messages == []

    sms_provider.fail_next(400, code=21215, message="Geo permission")
    with pytest.raises(ChannelError) as error:
        send_voicemail(workspace, "+15125550101", "https://example.test/vm.mp3")
    assert not error.value.transient and error.value.provider_code == "21215"


def test_outbox_records_a_voicemail_drop(workspace):
    result = get_channel(workspace, "sms").send_voicemail(
        "+15125550101", "https://example.test/vm.mp3", contact_id=9
    )
    [record] = read_texts(workspace, 9)
    assert record["kind"] == "voicemail"
    assert record["audio_url"] == "https://example.test/vm.mp3"
    assert record["provider_id"] == result.provider_id
