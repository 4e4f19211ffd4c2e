"""The outbox channel: every message becomes a file, nothing leaves the machine.

Files go to ``data/outbox/<contact_id>/``: an ``.eml`` per email (open it in
any mail program) and a ``.json`` per text or voicemail. One folder per contact
lets privacy erasure remove a person's messages by deleting one folder. Each
file is written under a temporary name and renamed, so a reader never sees half
a message.
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


class OutboxChannel:
    name = "outbox"

    def __init__(self, workspace, kind: str):
        self.workspace = workspace
        self.kind = kind

    def send(self, message: OutboundMessage) -> SendResult:
        token = secrets.token_hex(6)
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

    def send_voicemail(
        self, to: str, audio_url: str, *, contact_id: int | None = None
    ) -> SendResult:
        token = secrets.token_hex(6)
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
        folder = self.workspace.outbox_dir / (
            str(contact_id) if contact_id is not None else NO_CONTACT_FOLDER
        )
        path = folder / f"{_stamp()}-{token}.{suffix}"
        temporary = folder / f".{path.name}.tmp"
        # No fsync: the message row (address, subject, body), committed before
        # this call, is the durable record and the file a copy of it. The
        # database runs with synchronous = NORMAL, durable across a killed
        # process but not a power cut; the file gets that same durability from
        # the page cache, where an fsync per message cost more than the rest of
        # the send.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(temporary, flags, 0o666)
        except FileNotFoundError:
            # The contact's first message (or its folder erased): make it once
            # here rather than asking the file system on every send.
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


def _stamp() -> str:
    # Wall-clock time only names the file so a folder lists in send order.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
