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
from dataclasses import dataclass, field
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import contacts
from cxm_cli.channels import OutboundMessage, get_channel
from cxm_cli.errors import ChannelError, CxmError, InputError
from cxm_cli.events import NewEvent, record_event, record_events
from cxm_cli.outbound import decorate
from cxm_cli.rendering import RenderedMessage, render_message, render_text
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms")


class ConsentRefused(CxmError):
    """The contact may not be messaged on this channel.

    ``reason`` is ``opted_out``, ``number_opted_out`` (a text to a phone
    another contact holding it opted out of), ``suppressed``, ``bouncing`` or
    ``no_address``.
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
    SMS (and voicemail): never a fax or a number with an extension (a
    switchboard line cannot take texts); of the rest a mobile first, then the
    primary phone, then the oldest.
    """
    return consent_facts(db, [contact]).address(contact, channel)


def textable(kind: str | None, extension: str | None) -> bool:
    """Whether a phone of this kind can take a text or a voicemail drop: a fax
    cannot, nor can a number with an extension (a switchboard line)."""
    return (kind or "") != "fax" and not (extension or "").strip()


def check_consent(db, contact: dict[str, Any], channel: str) -> str:
    """The address to use, or :class:`ConsentRefused` saying why not."""
    return consent_facts(db, [contact], (channel,)).check(contact, channel)


_UNKNOWN = object()


@dataclass
class ConsentFacts:
    """What the consent check needs to know about some contacts.

    Read with a few statements for all of them (:func:`consent_facts`), so a
    runner's batch checks every step's contact without a query per step.
    """

    opted_out: set[tuple[int, str]]
    # (id, phone, kind, is_primary, extension, created_at) per contact
    phones: dict[int, list[tuple[int, str, str | None, int, str | None, str]]]
    emails: dict[int, list[tuple[int, str, int]]]
    suppressed: set[str]  # identifier hashes of the contacts' addresses
    email_status: dict[str, str]
    channels: tuple[str, ...] = CHANNELS  # the suppression list was read for
    # phone -> contacts holding it (as a textable number) who opted out of SMS
    number_opt_outs: dict[str, set[int]] = field(default_factory=dict)
    _addresses: dict[tuple, str | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def is_opted_out(self, contact_id: int, channel: str) -> bool:
        return (contact_id, channel) in self.opted_out

    def address(self, contact: dict[str, Any], channel: str) -> str | None:
        # A batch asks for each contact's address several times (its
        # checks, the suppression read, the recheck): sort its rows once.
        key = (contact["id"], channel, contact.get("email"), contact.get("phone"))
        found = self._addresses.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._addresses[key] = self._address(contact, channel)
        return found

    def _address(self, contact: dict[str, Any], channel: str) -> str | None:
        contact_id = contact["id"]
        if channel == "email":
            main = contact.get("email") or ""
            rows = sorted(
                self.emails.get(contact_id, ()),
                key=lambda row: (-row[2], -(row[1] == main), row[0]),
            )
            return rows[0][1] if rows else (contact.get("email") or None)

        phones = self.phones.get(contact_id, ())
        main = contact.get("phone") or ""
        usable = sorted(
            (row for row in phones if textable(row[2], row[4])),
            key=lambda row: (
                -(row[2] == "mobile"),
                -row[3],
                -(row[1] == main),
                row[5],
                row[0],
            ),
        )
        if usable:
            return usable[0][1]
        # A phone only on the contact row (no phone rows at all) is still usable;
        # when every phone row is a fax or an extension, the contact row holds
        # one of them.
        return None if phones else (contact.get("phone") or None)

    def check(self, contact: dict[str, Any], channel: str) -> str:
        """The address to use, or :class:`ConsentRefused` saying why not."""
        if channel not in self.channels:
            raise ValueError(f"consent facts were not read for {channel}")
        contact_id = contact["id"]
        if self.is_opted_out(contact_id, channel):
            raise ConsentRefused(
                f"contact {contact_id} opted out of {channel}", reason="opted_out"
            )

        address = self.address(contact, channel)
        if not address:
            what = (
                "email address" if channel == "email" else "phone that can take texts"
            )
            raise ConsentRefused(
                f"contact {contact_id} has no {what}", reason="no_address"
            )

        if channel == "sms":
            # Carriers and people alike treat an opt-out as the number's: a
            # household member who said "no texts" on an import, by STOP or
            # through the provider must not be texted through someone else.
            others = sorted(self.number_opt_outs.get(address, set()) - {contact_id})
            if others:
                raise ConsentRefused(
                    f"this number opted out of texts (shared with contact {others[0]})",
                    reason="number_opted_out",
                )

        if contacts.identifier_hash(address) in self.suppressed:
            raise ConsentRefused(
                f"contact {contact_id}'s {channel} address is on the suppression list",
                reason="suppressed",
            )
        if channel == "email" and self.email_status.get(address) == "bouncing":
            raise ConsentRefused(
                f"contact {contact_id}'s email address is bouncing",
                reason="bouncing",
                hint="fix or replace the address, then mark it ok",
            )
        return address


def consent_facts(
    db, contact_rows: list[dict[str, Any]], channels: tuple[str, ...] = CHANNELS
) -> ConsentFacts:
    """Read what :meth:`ConsentFacts.check` needs for these contacts (on
    ``channels``; the suppression list is read for their addresses there)."""
    ids = sorted({contact["id"] for contact in contact_rows})
    marks = ", ".join("?" for _ in ids)
    conn = db.conn
    opted_out = {
        (row[0], row[1])
        for row in conn.execute(
            f"SELECT contact_id, channel FROM consents WHERE contact_id IN ({marks}) "
            "AND status = 'opted_out'",
            ids,
        )
    }
    phones: dict[int, list[tuple[int, str, str | None, int, str | None, str]]] = {}
    for row in conn.execute(
        "SELECT contact_id, id, phone, kind, is_primary, extension, created_at "
        f"FROM contact_phones WHERE contact_id IN ({marks})",
        ids,
    ):
        phones.setdefault(row[0], []).append(row[1:])
    emails: dict[int, list[tuple[int, str, int]]] = {}
    email_status: dict[str, str] = {}
    for row in conn.execute(
        "SELECT contact_id, id, email, is_primary, status FROM contact_emails "
        f"WHERE contact_id IN ({marks})",
        ids,
    ):
        emails.setdefault(row[0], []).append(row[1:4])
        email_status[row[2]] = row[4]
    facts = ConsentFacts(
        opted_out, phones, emails, set(), email_status, tuple(channels)
    )

    addresses: set[str] = set()
    for contact in contact_rows:
        for channel in channels:
            address = facts.address(contact, channel)
            if address:
                addresses.add(address)
    if "sms" in channels:
        facts.number_opt_outs = _number_opt_outs(
            conn,
            sorted(
                {facts.address(contact, "sms") for contact in contact_rows} - {None}
            ),
        )
    hashes = sorted({contacts.identifier_hash(address) for address in addresses})
    if hashes:
        facts.suppressed = {
            row[0]
            for row in conn.execute(
                "SELECT identifier_hash FROM suppressions WHERE identifier_hash IN "
                f"({', '.join('?' for _ in hashes)})",
                hashes,
            )
        }
    # An email only on the contact row may still have a row of another contact.
    strays = sorted(
        contact["email"]
        for contact in contact_rows
        if contact.get("email") and contact["email"] not in email_status
    )
    if strays:
        for row in conn.execute(
            "SELECT email, status FROM contact_emails WHERE email IN "
            f"({', '.join('?' for _ in strays)})",
            strays,
        ):
            email_status[row[0]] = row[1]
    return facts


def _number_opt_outs(conn, phones: list[str]) -> dict[str, set[int]]:
    """Who opted out of SMS among every holder of these phones.

    A holder is a contact with the number on a phone row without an
    extension, or only on its contact row when it has no phone rows (the
    same numbers :meth:`ConsentFacts.address` would text).
    """
    found: dict[str, set[int]] = {}
    for start in range(0, len(phones), 400):
        chunk = phones[start : start + 400]
        marks = ", ".join("?" for _ in chunk)
        for phone, holder in conn.execute(
            "SELECT p.phone, p.contact_id FROM contact_phones p "
            "JOIN consents c ON c.contact_id = p.contact_id "
            "AND c.channel = 'sms' AND c.status = 'opted_out' "
            f"WHERE p.phone IN ({marks}) AND COALESCE(TRIM(p.extension), '') = '' "
            "UNION SELECT k.phone, k.id FROM contacts k "
            "JOIN consents c ON c.contact_id = k.id "
            "AND c.channel = 'sms' AND c.status = 'opted_out' "
            f"WHERE k.phone IN ({marks}) AND NOT EXISTS "
            "(SELECT 1 FROM contact_phones q WHERE q.contact_id = k.id)",
            [*chunk, *chunk],
        ):
            found.setdefault(phone, set()).add(holder)
    return found


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
    tags: list[str] | None = None,
) -> RenderedMessage:
    """Render a template, or staff-typed text, for ``contact`` on ``channel``.

    ``tags`` are the contact's tags when the caller read them already.
    """
    if (template is None) == (text is None):
        raise InputError("give a template or a text, not both or neither")

    def text_of(source: str) -> str:
        return render_text(
            workspace, source, contact, extra=extra, channel=channel, db=db, tags=tags
        )

    if template is not None:
        rendered = render_message(
            workspace, db, template, contact, channel=channel, extra=extra, tags=tags
        )
        if subject is not None and channel == "email":
            rendered.subject = text_of(subject)
        return rendered

    body = text_of(text or "")
    if not body:
        raise InputError("the message text is empty")
    rendered_subject = None
    if channel == "email":
        rendered_subject = (
            text_of(subject) if subject else f"A message from {workspace.business_name}"
        )
    return RenderedMessage(
        subject=rendered_subject,
        body=body,
        html_body=None,
        template=None,
        channel=channel,
    )


@dataclass
class PreparedMessage:
    """A message checked and rendered for one contact, not yet recorded."""

    contact: dict[str, Any]
    outbound: OutboundMessage
    rendered: RenderedMessage
    due_step_id: int | None = None
    thread_id: str | None = None
    message_id: int | None = None  # set once recorded as 'sending'

    @property
    def channel(self) -> str:
        return self.outbound.channel

    @property
    def address(self) -> str:
        return self.outbound.to


def prepare_message(
    workspace,
    db,
    contact: dict[str, Any],
    channel: str,
    *,
    template: str | None = None,
    text: str | None = None,
    subject: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    due_step_id: int | None = None,
    thread_id: str | None = None,
    facts: ConsentFacts | None = None,
    tags: list[str] | None = None,
) -> PreparedMessage:
    """Check consent and render; nothing is recorded. Raises as send_message.

    ``facts`` and ``tags`` (read for a batch of contacts) save reading them
    again.
    """
    if channel not in CHANNELS:
        raise InputError(f"unknown channel {channel!r}; use email or sms")
    if facts is None:
        facts = consent_facts(db, [contact], (channel,))
    address = facts.check(contact, channel)
    rendered = render_for(
        workspace,
        db,
        contact,
        channel,
        template=template,
        text=text,
        subject=subject,
        extra=extra,
        tags=tags,
    )
    outbound = OutboundMessage(
        channel=channel,
        to=address,
        body=rendered.body,
        subject=rendered.subject,
        contact_id=contact["id"],
        headers=dict(headers or {}),
        html_body=rendered.html_body,
    )
    return PreparedMessage(contact, outbound, rendered, due_step_id, thread_id)


def is_idempotent(sender) -> bool:
    """Whether sending one message id twice delivers it once (the outbox).

    Such a channel gets the message id with each send, and the runner may
    record a batch of its sends in one transaction: a crash before that
    commit makes the next runner send the batch again under the same ids.
    """
    return bool(getattr(sender, "idempotent", False))


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
    contact = contacts.get_contact(db, contact_id)
    prepared = prepare_message(
        workspace,
        db,
        contact,
        channel,
        template=template,
        text=text,
        subject=subject,
        extra=extra,
        headers=headers,
        due_step_id=due_step_id,
        thread_id=thread_id,
    )
    if dry_run:
        return SentMessage(
            None, None, "dry_run", channel, prepared.address, prepared.rendered
        )

    if db.conn.in_transaction:
        raise RuntimeError(
            "send_message must be called outside a transaction: the message row "
            "is committed before the provider call"
        )
    sender = get_channel(workspace, channel)
    record_sending(workspace, db, clock, prepared)
    sent = deliver(db, clock, sender, prepared)

    with write_transaction(db):
        record_sent(
            db,
            clock,
            prepared,
            sent,
            source=source,
            automated=automated,
            event_data=event_data,
        )
        caller_failure = _after_recording(db, on_recorded, sent)

    if caller_failure is not None:
        raise caller_failure
    return sent


def _after_recording(db, on_recorded, sent: SentMessage) -> BaseException | None:
    """Run the caller's ``on_recorded(sent)`` in a savepoint of the send's
    record; its error is returned, for the caller to raise after the commit.

    The message is out: its record must commit whatever the caller's part
    did, or a retry would send it again.
    """
    if on_recorded is None:
        return None
    try:
        with write_transaction(db):
            on_recorded(sent)
    except BaseException as exc:  # noqa: BLE001 - raised after the commit
        return exc
    return None


def deliver(db, clock, sender, prepared: PreparedMessage) -> SentMessage:
    """The provider call for a message recorded as 'sending'.

    A :class:`ChannelError` marks the message failed (in its own transaction)
    and is raised again for the caller to retry or give up.
    """
    outbound = prepared.outbound
    try:
        if is_idempotent(sender):
            result = sender.send(outbound, message_id=prepared.message_id)
        else:
            result = sender.send(outbound)
    except ChannelError as exc:
        _record_failure(
            db, clock, outbound.contact_id, outbound.channel, prepared.message_id, exc
        )
        raise

    provider_id = result.provider_id
    if outbound.channel == "email":
        # Replies quote our Message-ID; keep it even if the relay has its own id.
        provider_id = outbound.headers["Message-ID"]
    return SentMessage(
        prepared.message_id,
        provider_id,
        result.status or "sent",
        outbound.channel,
        outbound.to,
        prepared.rendered,
    )


def record_sent(
    db,
    clock,
    prepared: PreparedMessage,
    sent: SentMessage,
    *,
    source: str = "runner",
    automated: bool = True,
    event_data: dict[str, Any] | None = None,
) -> None:
    """Mark the message sent and put ``message.sent`` on the timeline.

    The caller holds the write transaction.
    """
    record_sent_many(
        db,
        clock,
        [(prepared, sent, event_data)],
        source=source,
        automated=automated,
    )


def record_sent_many(
    db,
    clock,
    items: list[tuple[PreparedMessage, SentMessage, dict[str, Any] | None]],
    *,
    source: str = "runner",
    automated: bool = True,
) -> None:
    """:func:`record_sent` for many messages (``(prepared, sent, event_data)``)
    with one statement per kind of write, in the caller's transaction.

    A batch of sends through an idempotent channel is recorded this way.
    """
    new_events = []
    for prepared, sent, event_data in items:
        data = {
            **(event_data or {}),
            "message_id": sent.message_id,
            "channel": sent.channel,
            "template": prepared.rendered.template,
            "due_step_id": prepared.due_step_id,
            "automated": automated,
        }
        new_events.append(
            NewEvent(prepared.contact["id"], "message.sent", data, source=source)
        )
    events = record_events(db, new_events, clock=clock)
    # After the events, so one statement also links each message to its
    # event: no hook reads a message's status (caps count 'sending' too).
    db.conn.executemany(
        "UPDATE messages SET status = ?, provider_id = ?, event_id = ? WHERE id = ?",
        [
            (sent.status, sent.provider_id, event.id, sent.message_id)
            for event, (_, sent, _) in zip(events, items, strict=True)
        ],
    )
    log.debug("%d messages recorded as sent", len(items))


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
    reuse: bool = False,
    dry_run: bool = False,
    on_recorded: Callable[[SentMessage], Any] | None = None,
) -> SentMessage:
    """Leave a recorded voicemail on the contact's phone (a ``voicemail`` message).

    The one voicemail send path (the runner's ``voicemail:`` step too). The
    same rules as a text: the phone must not be a fax, and a contact who
    opted out of SMS (or of voicemail) is not called either. Goes through the
    SMS channel's provider (or the outbox). ``reuse``, ``dry_run`` and
    ``on_recorded`` work as for :func:`record_sending` and
    :func:`send_message`: a due step claimed again takes over the 'sending'
    row its dead runner left, and an idempotent channel gets that message id
    again as a resend, so it writes the drop once.
    """
    if not str(audio_url).startswith(("https://", "http://")):
        raise InputError(f"voicemail audio must be an http(s) URL, not {audio_url!r}")
    contact = contacts.get_contact(db, contact_id)
    if dry_run:
        address = _voicemail_address(db, contact)
        return SentMessage(None, None, "dry_run", "voicemail", address)

    if db.conn.in_transaction:
        raise RuntimeError("drop_voicemail must be called outside a transaction")
    sender = get_channel(workspace, "sms")
    with write_transaction(db):
        # Checked under the write lock: a STOP recorded meanwhile still counts.
        address = _voicemail_address(db, contact)
        values = [address, audio_url, due_step_id, clocks.now_iso(clock)]
        left = _left_sending(db, due_step_id, "voicemail") if reuse else None
        if left is not None:
            message_id = left
            db.execute(
                "UPDATE messages SET address = ?, body = ?, due_step_id = ?, "
                "at = ?, error = NULL WHERE id = ?",
                [*values, message_id],
            )
            _record_resent(db, clock, contact_id, message_id, "voicemail")
        else:
            message_id = db.execute(
                "INSERT INTO messages (contact_id, channel, direction, address, "
                "body, status, due_step_id, at) "
                "VALUES (?, 'voicemail', 'outbound', ?, ?, 'sending', ?, ?)",
                [contact_id, *values],
            ).lastrowid

    try:
        if is_idempotent(sender):
            result = sender.send_voicemail(
                address,
                audio_url,
                contact_id=contact_id,
                message_id=message_id,
                resend=left is not None,
            )
        else:
            # Limitation: a provider that is not idempotent is called again
            # for a row taken over from a runner that died after the call and
            # before recording it, so that one drop can reach the phone twice.
            result = sender.send_voicemail(address, audio_url, contact_id=contact_id)
    except ChannelError as exc:
        _record_failure(db, clock, contact_id, "sms", message_id, exc)
        raise

    sent = SentMessage(
        message_id, result.provider_id, result.status or "sent", "voicemail", address
    )
    with write_transaction(db):
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
        _update_message(
            db,
            message_id,
            status=sent.status,
            provider_id=sent.provider_id,
            event_id=event.id,
        )
        caller_failure = _after_recording(db, on_recorded, sent)

    if caller_failure is not None:
        raise caller_failure
    return sent


def _voicemail_address(db, contact: dict[str, Any]) -> str:
    """The phone a voicemail drop goes to, or :class:`ConsentRefused`."""
    facts = consent_facts(db, [contact], ("sms",))
    if facts.is_opted_out(contact["id"], "voicemail"):
        raise ConsentRefused(
            f"contact {contact['id']} opted out of voicemail", reason="opted_out"
        )
    return facts.check(contact, "sms")


def record_sending(
    workspace,
    db,
    clock,
    prepared: PreparedMessage,
    *,
    reuse: bool = False,
    facts: ConsentFacts | None = None,
) -> int:
    """Insert the message as 'sending' and let decorators touch it.

    Commits at once when called outside a transaction; inside one (a batch)
    it is a savepoint of it. ``reuse`` takes over a 'sending' row the same
    due step left behind (its runner died before recording the send), so an
    idempotent channel sends it again under the same id. Raises
    :class:`ConsentRefused` when the recheck under the write lock fails;
    ``facts`` must then have been read under that same lock.
    """
    outbound = prepared.outbound
    due_step_id = prepared.due_step_id
    with write_transaction(db):
        if facts is None:
            facts = consent_facts(db, [prepared.contact], (outbound.channel,))
        values = _sending_values(prepared, facts, clock)
        left = _left_sending(db, due_step_id, outbound.channel) if reuse else None
        if left is not None:
            message_id = left
            # The dead runner may have handed it to the channel already.
            outbound.resend = True
            db.execute(
                "UPDATE messages SET contact_id = ?, channel = ?, address = ?, "
                "subject = ?, body = ?, template = ?, thread_id = ?, "
                "due_step_id = ?, at = ?, error = NULL WHERE id = ?",
                [*values, message_id],
            )
            _record_resent(
                db, clock, prepared.contact["id"], message_id, outbound.channel
            )
        else:
            message_id = db.execute(
                "INSERT INTO messages (contact_id, channel, direction, address, "
                "subject, body, template, status, thread_id, due_step_id, at) "
                "VALUES (?, ?, 'outbound', ?, ?, ?, ?, 'sending', ?, ?, ?)",
                values,
            ).lastrowid
        _finish_sending(workspace, db, prepared, message_id)
    return message_id


_INSERT_SENDING = (
    "INSERT INTO messages (contact_id, channel, direction, address, subject, body, "
    "template, status, thread_id, due_step_id, at) "
    "VALUES (?, ?, 'outbound', ?, ?, ?, ?, 'sending', ?, ?, ?)"
)


def record_sending_many(
    workspace, db, clock, items: list[tuple[PreparedMessage, bool]], *, facts
) -> list[BaseException | None]:
    """:func:`record_sending` for a batch's messages (``(prepared, reuse)``), in
    the caller's write transaction, with ``facts`` read under its lock.

    New rows are inserted with one statement; what each message came to is
    answered in order: None when recorded, else the error that stopped it
    (nothing of that message is left in the database).
    """
    errors: list[BaseException | None] = [None] * len(items)
    fresh: list[int] = []
    rows = []
    for position, (prepared, reuse) in enumerate(items):
        try:
            if reuse:
                # A row a dead runner left: the one-message path takes it over.
                record_sending(workspace, db, clock, prepared, reuse=True, facts=facts)
                continue
            rows.append(_sending_values(prepared, facts, clock))
        except Exception as exc:  # noqa: BLE001 - that message's outcome
            errors[position] = exc
            continue
        fresh.append(position)
    if not rows:
        return errors

    conn = db.conn
    # Under the caller's write lock SQLite numbers the rows one after another,
    # so the last id gives them all.
    conn.executemany(_INSERT_SENDING, rows)
    last_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    for offset, position in enumerate(fresh):
        message_id = last_id - len(fresh) + 1 + offset
        try:
            _finish_sending(workspace, db, items[position][0], message_id)
        except Exception as exc:  # noqa: BLE001 - that message's outcome
            # No savepoint per message: its row is taken back by hand.
            conn.execute("DELETE FROM messages WHERE id = ?", [message_id])
            items[position][0].message_id = None
            errors[position] = exc
    return errors


def _sending_values(prepared: PreparedMessage, facts: ConsentFacts, clock) -> list:
    """The 'sending' row's values, once consent is checked again under the
    write lock: an opt-out recorded since the first check (a STOP arriving
    mid-render) must still stop this send."""
    contact = prepared.contact
    outbound = prepared.outbound
    if facts.check(contact, outbound.channel) != outbound.to:
        raise ConsentRefused(
            f"contact {contact['id']}'s {outbound.channel} address changed "
            "while the message was prepared",
            reason="no_address",
        )
    return [
        contact["id"],
        outbound.channel,
        outbound.to,
        outbound.subject,
        outbound.body,
        prepared.rendered.template,
        prepared.thread_id,
        prepared.due_step_id,
        clocks.now_iso(clock),
    ]


def _finish_sending(workspace, db, prepared: PreparedMessage, message_id: int) -> None:
    """The recorded message's id, idempotency key and Message-ID, and what
    the decorators add (written back when they change it)."""
    outbound = prepared.outbound
    due_step_id = prepared.due_step_id
    prepared.message_id = message_id
    outbound.idempotency_key = (
        f"step-{due_step_id}" if due_step_id is not None else f"message-{message_id}"
    )
    provider_id = None
    if outbound.channel == "email":
        from cxm_cli.channels.smtp import new_message_id

        provider_id = outbound.headers.get("Message-ID") or new_message_id(
            workspace, f"cxm{message_id}"
        )
        outbound.headers["Message-ID"] = provider_id

    recorded = (outbound.subject, outbound.body)
    decorate(workspace, db, outbound, prepared.contact, message_id)
    if provider_id is not None or (outbound.subject, outbound.body) != recorded:
        _update_message(
            db,
            message_id,
            subject=outbound.subject,
            body=outbound.body,
            provider_id=provider_id,
        )


def _record_resent(db, clock, contact_id: int, message_id: int, channel: str):
    """So "did she get it twice?" has an answer on the timeline: a message a
    dead runner left mid-send is sent again."""
    record_event(
        db,
        contact_id,
        "message.resent",
        clock=clock,
        data={"message_id": message_id, "channel": channel},
        source="runner",
    )


def _left_sending(db, due_step_id: int | None, channel: str) -> int | None:
    if due_step_id is None:
        return None
    row = db.execute(
        "SELECT id FROM messages WHERE due_step_id = ? AND channel = ? "
        "AND direction = 'outbound' AND status = 'sending' ORDER BY id DESC LIMIT 1",
        [due_step_id, channel],
    ).fetchone()
    return row[0] if row else None


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
