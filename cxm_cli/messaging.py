"""The one path every outgoing message takes.

The runner, replies from the terminal and review requests all call
:func:`send_message`. It checks that the person may be messaged on the channel,
renders the message, records it *before* the provider is called (committed, so
a crash leaves a trace and no write lock is held during network I/O), sends it,
and puts ``message.sent`` on the contact's timeline. A provider failure marks
the message failed and is re-raised for the caller to retry or give up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import contacts
from cxm_cli.channels import OutboundMessage, get_channel
from cxm_cli.errors import ChannelError, CxmError, InputError
from cxm_cli.events import record_event
from cxm_cli.outbound import decorate
from cxm_cli.rendering import RenderedMessage, render_message, render_text
from cxm_cli.sms_encoding import sms_segments
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms")


class ConsentRefused(CxmError):
    """The contact may not be messaged on this channel.

    ``reason`` is ``opted_out``, ``suppressed``, ``bouncing`` or ``no_address``.
    """

    def __init__(self, message: str, *, reason: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclass
class SentMessage:
    message_id: int | None  # None for a dry run
    provider_id: str | None
    status: str  # "sent", or "dry_run"
    channel: str
    address: str
    rendered: RenderedMessage | None = None


def pick_address(db, contact: dict[str, Any], channel: str) -> str | None:
    """The address a message on ``channel`` goes to, or None when there is none.

    Email: the primary email (else the contact's main one, else the oldest).
    SMS: the primary phone that is not a fax, preferring mobiles.
    """
    contact_id = contact["id"]
    if channel == "email":
        row = fetch_one(
            db,
            """
            SELECT email FROM contact_emails WHERE contact_id = ?
            ORDER BY is_primary DESC, (email = ?) DESC, id
            LIMIT 1
            """,
            [contact_id, contact.get("email") or ""],
        )
        return row["email"] if row else (contact.get("email") or None)

    row = fetch_one(
        db,
        """
        SELECT phone FROM contact_phones
        WHERE contact_id = ? AND COALESCE(kind, '') != 'fax'
        ORDER BY is_primary DESC, (kind = 'mobile') DESC, (phone = ?) DESC, id
        LIMIT 1
        """,
        [contact_id, contact.get("phone") or ""],
    )
    if row:
        return row["phone"]
    has_phone_rows = fetch_one(
        db, "SELECT 1 AS x FROM contact_phones WHERE contact_id = ?", [contact_id]
    )
    # A phone only on the contact row (no phone rows at all) is still usable;
    # when every phone row is a fax, the contact row's copy is a fax too.
    return None if has_phone_rows else (contact.get("phone") or None)


def check_consent(db, contact: dict[str, Any], channel: str) -> str:
    """The address to use, or :class:`ConsentRefused` saying why not."""
    contact_id = contact["id"]
    if contacts.is_opted_out(db, contact_id, channel):
        raise ConsentRefused(
            f"contact {contact_id} opted out of {channel}", reason="opted_out"
        )

    address = pick_address(db, contact, channel)
    if not address:
        what = "email address" if channel == "email" else "phone that can take texts"
        raise ConsentRefused(f"contact {contact_id} has no {what}", reason="no_address")

    if contacts.is_suppressed(db, address):
        raise ConsentRefused(
            f"contact {contact_id}'s {channel} address is on the suppression list",
            reason="suppressed",
        )
    if channel == "email":
        row = fetch_one(
            db, "SELECT status FROM contact_emails WHERE email = ?", [address]
        )
        if row and row["status"] == "bouncing":
            raise ConsentRefused(
                f"contact {contact_id}'s email address is bouncing",
                reason="bouncing",
                hint="fix or replace the address, then mark it ok",
            )
    return address


def render_for(
    workspace,
    db,
    contact: dict[str, Any],
    channel: str,
    *,
    template: str | None,
    text: str | None,
    subject: str | None,
    extra: dict[str, Any] | None,
) -> RenderedMessage:
    """Render a template, or staff-typed text, for ``contact`` on ``channel``."""
    if (template is None) == (text is None):
        raise InputError("give a template or a text, not both or neither")

    if template is not None:
        rendered = render_message(
            workspace, db, template, contact, channel=channel, extra=extra
        )
        if subject is not None and channel == "email":
            rendered.subject = render_text(
                workspace, subject, contact, extra=extra, channel=channel, db=db
            )
        return rendered

    body = render_text(
        workspace, text or "", contact, extra=extra, channel=channel, db=db
    )
    if not body:
        raise InputError("the message text is empty")
    rendered_subject = None
    if channel == "email":
        rendered_subject = (
            render_text(
                workspace, subject, contact, extra=extra, channel=channel, db=db
            )
            if subject
            else f"A message from {workspace.business_name}"
        )
    return RenderedMessage(
        subject=rendered_subject,
        body=body,
        html_body=None,
        template=None,
        channel=channel,
        sms=sms_segments(body) if channel == "sms" else None,
    )


def send_message(
    workspace,
    db,
    clock,
    contact_id: int,
    channel: str,
    *,
    template: str | None = None,
    text: str | None = None,
    subject: str | None = None,
    extra: dict[str, Any] | None = None,
    due_step_id: int | None = None,
    source: str = "runner",
    automated: bool = True,
    thread_id: str | None = None,
    headers: dict[str, str] | None = None,
    event_data: dict[str, Any] | None = None,
    dry_run: bool = False,
    on_recorded: Callable[[SentMessage], Any] | None = None,
) -> SentMessage:
    """Check, render, record, send and log one message to one contact.

    Must be called outside any open transaction (the message row is committed
    before the provider is called). ``headers`` adds email headers (for
    example In-Reply-To on a reply); ``event_data`` adds keys such as
    ``sequence`` to the ``message.sent`` event. ``dry_run`` renders and checks
    consent but records and sends nothing. ``on_recorded(sent)`` runs inside
    the transaction that records the send, so the caller's own record of it
    (the runner finishing its step) commits in the same transaction; it runs
    in a savepoint, and if it raises, its writes are undone, the send is
    committed all the same, and the error is raised after.

    Raises ConsentRefused, TemplateError, ConfigError (channel misconfigured,
    nothing recorded) or ChannelError (recorded as failed).
    """
    if channel not in CHANNELS:
        raise InputError(f"unknown channel {channel!r}; use email or sms")
    contact = contacts.get_contact(db, contact_id)
    address = check_consent(db, contact, channel)
    rendered = render_for(
        workspace,
        db,
        contact,
        channel,
        template=template,
        text=text,
        subject=subject,
        extra=extra,
    )
    if dry_run:
        return SentMessage(None, None, "dry_run", channel, address, rendered)

    if db.conn.in_transaction:
        raise RuntimeError(
            "send_message must be called outside a transaction: the message row "
            "is committed before the provider call"
        )
    sender = get_channel(workspace, channel)

    outbound = OutboundMessage(
        channel=channel,
        to=address,
        body=rendered.body,
        subject=rendered.subject,
        contact_id=contact_id,
        headers=dict(headers or {}),
        html_body=rendered.html_body,
    )
    message_id = _record_sending(
        workspace, db, clock, contact, outbound, rendered, due_step_id, thread_id
    )

    try:
        result = sender.send(outbound)
    except ChannelError as exc:
        _record_failure(db, clock, contact_id, channel, message_id, exc)
        raise

    provider_id = result.provider_id
    if channel == "email":
        # Replies quote our Message-ID; keep it even if the relay has its own id.
        provider_id = outbound.headers["Message-ID"]
    sent = SentMessage(
        message_id, provider_id, result.status or "sent", channel, address, rendered
    )
    caller_failure: BaseException | None = None
    with write_transaction(db):
        _update_message(db, message_id, status=sent.status, provider_id=provider_id)
        data = {
            **(event_data or {}),
            "message_id": message_id,
            "channel": channel,
            "template": rendered.template,
            "due_step_id": due_step_id,
            "automated": automated,
        }
        event = record_event(
            db, contact_id, "message.sent", clock=clock, data=data, source=source
        )
        _update_message(db, message_id, event_id=event.id)
        if on_recorded is not None:
            try:
                with write_transaction(db):
                    on_recorded(sent)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                # The message is out: its record must commit whatever the
                # caller's part did, or a retry would send it again.
                caller_failure = exc

    log.info("message %s sent to contact %s by %s", message_id, contact_id, channel)
    if caller_failure is not None:
        raise caller_failure
    return sent


def drop_voicemail(
    workspace,
    db,
    clock,
    contact_id: int,
    audio_url: str,
    *,
    due_step_id: int | None = None,
    source: str = "runner",
    automated: bool = True,
    event_data: dict[str, Any] | None = None,
) -> SentMessage:
    """Leave a recorded voicemail on the contact's phone (a ``voicemail`` message).

    The same rules as a text: the phone must not be a fax, and a contact who
    opted out of SMS is not called either. Goes through the SMS channel's
    provider (or the outbox).
    """
    if not str(audio_url).startswith(("https://", "http://")):
        raise InputError(f"voicemail audio must be an http(s) URL, not {audio_url!r}")
    contact = contacts.get_contact(db, contact_id)
    if contacts.is_opted_out(db, contact_id, "voicemail"):
        raise ConsentRefused(
            f"contact {contact_id} opted out of voicemail", reason="opted_out"
        )
    if db.conn.in_transaction:
        raise RuntimeError("drop_voicemail must be called outside a transaction")
    sender = get_channel(workspace, "sms")

    with write_transaction(db):
        address = check_consent(db, contact, "sms")
        message_id = (
            db["messages"]
            .insert(
                {
                    "contact_id": contact_id,
                    "channel": "voicemail",
                    "direction": "outbound",
                    "address": address,
                    "body": audio_url,
                    "status": "sending",
                    "due_step_id": due_step_id,
                    "at": clocks.now_iso(clock),
                }
            )
            .last_pk
        )

    try:
        result = sender.send_voicemail(address, audio_url, contact_id=contact_id)
    except ChannelError as exc:
        _record_failure(db, clock, contact_id, "sms", message_id, exc)
        raise

    with write_transaction(db):
        _update_message(db, message_id, status="sent", provider_id=result.provider_id)
        data = {
            **(event_data or {}),
            "message_id": message_id,
            "channel": "voicemail",
            "due_step_id": due_step_id,
            "automated": automated,
        }
        event = record_event(
            db, contact_id, "message.sent", clock=clock, data=data, source=source
        )
        _update_message(db, message_id, event_id=event.id)
    return SentMessage(message_id, result.provider_id, "sent", "voicemail", address)


def _record_sending(
    workspace,
    db,
    clock,
    contact: dict[str, Any],
    outbound: OutboundMessage,
    rendered: RenderedMessage,
    due_step_id: int | None,
    thread_id: str | None,
) -> int:
    """Insert the message as 'sending' and let decorators touch it; commit."""
    with write_transaction(db):
        # Checked again under the write lock: an opt-out recorded since the
        # first check (a STOP arriving mid-render) must still stop this send.
        if check_consent(db, contact, outbound.channel) != outbound.to:
            raise ConsentRefused(
                f"contact {contact['id']}'s {outbound.channel} address changed "
                "while the message was prepared",
                reason="no_address",
            )
        message_id = db.execute(
            "INSERT INTO messages (contact_id, channel, direction, address, "
            "subject, body, template, status, thread_id, due_step_id, at) "
            "VALUES (?, ?, 'outbound', ?, ?, ?, ?, 'sending', ?, ?, ?)",
            [
                contact["id"],
                outbound.channel,
                outbound.to,
                outbound.subject,
                outbound.body,
                rendered.template,
                thread_id,
                due_step_id,
                clocks.now_iso(clock),
            ],
        ).lastrowid
        outbound.idempotency_key = (
            f"step-{due_step_id}"
            if due_step_id is not None
            else f"message-{message_id}"
        )
        provider_id = None
        if outbound.channel == "email":
            from cxm_cli.channels.smtp import new_message_id

            provider_id = outbound.headers.get("Message-ID") or new_message_id(
                workspace, f"cxm{message_id}"
            )
            outbound.headers["Message-ID"] = provider_id

        recorded = (outbound.subject, outbound.body)
        decorate(workspace, db, outbound, contact, message_id)
        if provider_id is not None or (outbound.subject, outbound.body) != recorded:
            _update_message(
                db,
                message_id,
                subject=outbound.subject,
                body=outbound.body,
                provider_id=provider_id,
            )
    return message_id


def _update_message(db, message_id: int, **fields: Any) -> None:
    assignments = ", ".join(f"{column} = ?" for column in fields)
    db.execute(
        f"UPDATE messages SET {assignments} WHERE id = ?",
        [*fields.values(), message_id],
    )


def _record_failure(db, clock, contact_id, channel, message_id, exc: ChannelError):
    kind = "transient" if exc.transient else "permanent"
    log.warning(
        "message %s to contact %s failed (%s, code %s)",
        message_id,
        contact_id,
        kind,
        exc.provider_code,
    )
    detail = {"provider_code": exc.provider_code, "message_id": message_id}
    with write_transaction(db):
        _update_message(db, message_id, status="failed", error=exc.message)
        if exc.opt_out and channel == "sms":
            # The carrier blocks the number, not the person: everyone who
            # shares it is opted out, as a STOP from it would do.
            address = db.execute(
                "SELECT address FROM messages WHERE id = ?", [message_id]
            ).fetchone()[0]
            contacts.opt_out_phone(
                db,
                address,
                clock=clock,
                source="provider",
                contact_id=contact_id,
                detail=detail,
            )
        elif exc.opt_out:
            contacts.set_consent(
                db,
                contact_id,
                channel,
                "opted_out",
                clock=clock,
                source="provider",
                detail=detail,
            )


def preview_message(
    workspace,
    db,
    template: str,
    reference: str,
    *,
    channel: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``template`` would send to the contact named by ``reference``.

    Unlike a dry run this never refuses: consent problems and long texts come
    back as ``warnings`` so staff can see the message anyway.
    """
    from cxm_cli.rendering import load_template

    contact = contacts.find_contact(db, reference, region=workspace.phone_region)
    message_template = load_template(workspace, template)
    channel = channel or message_template.channels[0]
    rendered = render_message(
        workspace, db, template, contact, channel=channel, extra=extra
    )

    warnings: list[str] = []
    try:
        address: str | None = check_consent(db, contact, channel)
    except ConsentRefused as refused:
        warnings.append(f"would not be sent: {refused.message}")
        address = pick_address(db, contact, channel)
    if rendered.fallbacks_used:
        warnings.append(f"fallback used for {', '.join(rendered.fallbacks_used)}")

    sms = None
    if rendered.sms is not None:
        limit = int(workspace.setting("channels.sms_segment_warning", 3))
        sms = {
            "encoding": rendered.sms.encoding,
            "characters": rendered.sms.characters,
            "segments": rendered.sms.segments,
            "non_gsm": list(rendered.sms.non_gsm),
        }
        if rendered.sms.segments > limit:
            warnings.append(
                f"this text takes {rendered.sms.segments} segments, more than the "
                f"{limit} set in cxm.toml [channels] sms_segment_warning"
            )
        if rendered.sms.non_gsm:
            shown = " ".join(repr(c) for c in rendered.sms.non_gsm[:5])
            warnings.append(f"UCS-2 (70 characters a segment) because of {shown}")

    return {
        "template": template,
        "channel": channel,
        "contact_id": contact["id"],
        "to": address,
        "subject": rendered.subject,
        "body": rendered.body,
        "html_body": rendered.html_body,
        "sms": sms,
        "warnings": warnings,
    }
