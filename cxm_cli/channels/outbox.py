"""The outbox channel: every message becomes a file, nothing leaves the machine.

Files go to ``data/outbox/<first>-<last>/<contact_id>-<name>``, one folder per
thousand contacts (``0-999/``, ``1000-1999/``, ...): an ``.eml`` per email
(open it in any mail program) and a ``.json`` per text or voicemail. A folder
per contact would be easier to browse, but on a busy disk making a folder and
its first file costs ten times a file in a folder that exists, and most
contacts get few messages. :func:`contact_files` lists one person's files
(privacy erasure and export use it). Each file is written under a temporary
name and renamed, so a reader never sees half a message.

The channel is idempotent by message id: a message recorded in ``messages``
is written to ``<contact_id>-msg-<id>.<suffix>``, so sending it again (a
runner killed after the write, before the send was recorded) rewrites the same
file rather than adding a second copy. The runner relies on that to record a
batch of outbox sends in one transaction. A message with no id (written
straight to the channel) gets a fresh, time-ordered name.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from cxm_cli.channels import OutboundMessage, SendResult
from cxm_cli.channels.smtp import build_email

log = logging.getLogger(__name__)

NO_CONTACT_FOLDER = "no-contact"
CONTACTS_PER_FOLDER = 1000


def contact_folder(workspace, contact_id: int | None) -> Path:
    """The folder holding a contact's outbox files (shared with 999 others)."""
    if contact_id is None:
        return workspace.outbox_dir / NO_CONTACT_FOLDER
    first = int(contact_id) // CONTACTS_PER_FOLDER * CONTACTS_PER_FOLDER
    return workspace.outbox_dir / f"{first}-{first + CONTACTS_PER_FOLDER - 1}"


def contact_files(workspace, contact_id: int, *, partial: bool = False) -> list[Path]:
    """One contact's outbox files, oldest first (by message id, then time).

    Files written before the shared folders, in ``outbox/<contact_id>/``,
    are included. ``partial`` adds the hidden temporary files of writes a
    killed runner left unfinished (they hold the message too: erasure needs
    them).
    """
    folder = contact_folder(workspace, contact_id)
    files = sorted(folder.glob(f"{int(contact_id)}-*")) if folder.is_dir() else []
    if partial and folder.is_dir():
        files += sorted(folder.glob(f".{int(contact_id)}-*.tmp"))
    old = workspace.outbox_dir / str(int(contact_id))
    if old.is_dir():
        files = sorted(path for path in old.rglob("*") if path.is_file()) + files
    return [path for path in files if partial or not path.name.startswith(".")]


class OutboxChannel:
    name = "outbox"
    # Sending one message id twice leaves one file: see the module docstring.
    idempotent = True

    def __init__(self, workspace, kind: str):
        self.workspace = workspace
        self.kind = kind

    def send(
        self, message: OutboundMessage, *, message_id: int | None = None
    ) -> SendResult:
        token = _file_token(message_id)
        if message.channel == "email":
            email = build_email(self.workspace, message)
            path = self._write(message.contact_id, token, "eml", email.as_bytes())
            provider_id = str(email["Message-ID"])
        else:
            provider_id = f"outbox-{token}"
            record = {
                "provider_id": provider_id,
                "channel": message.channel,
                "to": message.to,
                "from": self.workspace.setting("twilio.from_number"),
                "body": message.body,
                "contact_id": message.contact_id,
                "idempotency_key": message.idempotency_key,
                "headers": message.headers,
            }
            data = json.dumps(record, indent=2, ensure_ascii=False).encode("utf-8")
            path = self._write(message.contact_id, token, "json", data)

        log.info("outbox wrote %s for contact %s", path.name, message.contact_id)
        return SendResult(
            provider_id=provider_id, status="sent", detail={"path": str(path)}
        )

    def provider_id_for(self, message_id: int) -> str:
        """The provider id :meth:`send` gives a text with this message id."""
        return f"outbox-{_file_token(message_id)}"

    def send_voicemail(
        self,
        to: str,
        audio_url: str,
        *,
        contact_id: int | None = None,
        message_id: int | None = None,
    ) -> SendResult:
        token = _file_token(message_id)
        provider_id = f"outbox-{token}"
        record = {
            "provider_id": provider_id,
            "channel": "voicemail",
            "to": to,
            "from": self.workspace.setting("twilio.from_number"),
            "audio_url": audio_url,
            "contact_id": contact_id,
        }
        data = json.dumps(record, indent=2, ensure_ascii=False).encode("utf-8")
        path = self._write(contact_id, token, "voicemail.json", data)
        return SendResult(
            provider_id=provider_id, status="sent", detail={"path": str(path)}
        )

    def _write(
        self, contact_id: int | None, token: str, suffix: str, data: bytes
    ) -> Path:
        folder = contact_folder(self.workspace, contact_id)
        prefix = f"{contact_id}-" if contact_id is not None else ""
        path = folder / f"{prefix}{token}.{suffix}"
        # A name of its own per write: two runners that both think they own
        # a step (one lost its lease mid-write) must not write one file.
        temporary = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        # No fsync: the message row (address, subject, body), committed before
        # this call, is the durable record and the file a copy of it. The
        # database runs with synchronous = NORMAL, durable across a killed
        # process but not a power cut; the file gets that same durability from
        # the page cache, where an fsync per message cost more than the rest of
        # the send.
        # Limitation: a runner killed mid-write leaves its hidden temporary
        # file behind (the message itself is written again under its name).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(temporary, flags, 0o666)
        except FileNotFoundError:
            # The folder's first message: make it once here rather than
            # asking the file system on every send.
            folder.mkdir(parents=True, exist_ok=True)
            handle = os.open(temporary, flags, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
        finally:
            os.close(handle)
        os.replace(temporary, path)
        return path


def _file_token(message_id: int | None) -> str:
    """The file's name before its suffix: the message id's, else a fresh one."""
    # Limitation: files named after a message id and files with a time-stamped
    # name (written straight to the channel, or a voicemail step's) list in
    # send order among themselves, not with each other.
    if message_id is not None:
        # Zero-padded, so a contact's files list in send order.
        return f"msg-{message_id:09d}"
    return f"{_stamp()}-{secrets.token_hex(6)}"


def _stamp() -> str:
    # Wall-clock time only names the file so a folder lists in send order.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
