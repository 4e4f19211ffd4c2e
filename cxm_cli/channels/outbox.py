"""The outbox channel: every message is written down, nothing leaves the machine.

Layout: ``data/outbox/<first>-<last>/``, one folder per thousand contacts
(``0-999/``, ``1000-1999/``, ...; ``no-contact/`` for a message without one).
In each folder:

- ``<contact_id>-msg-<id>.eml``: one file per email, so any mail program
  opens it. Written under a temporary name and renamed, so a reader never
  sees half an email; sending a message id again rewrites the same file.
- ``texts.jsonl``: every text and voicemail drop of the folder's contacts,
  one compact JSON object per line (``kind`` "text" or "voicemail",
  ``message_id``, ``contact_id``, ``to``, ``body`` or ``audio_url``,
  ``written_at``, ...).

Why lines and not a file per text: on a busy disk creating a file costs
from tens to hundreds of microseconds of kernel time, appending a line to a
file that exists a few. A text is the runner's most common send, so file
creation capped its throughput.

Each append opens the file, takes an exclusive ``flock``, checks the file it
opened is still the one at the path (privacy erasure replaces the file while
holding the same lock), and writes the line with one write loop. A writer
killed mid-line leaves a torn last line: the next append starts with a
newline of its own, and readers skip any line that is not a whole JSON
object.

Idempotency by message id: an email keeps its file name. A text is appended
once per send, so the runner marks a message it takes over from a runner
that died before recording the send (``OutboundMessage.resend``); for those
the outbox first looks for a line with that message id, under the lock, and
if one is there writes nothing and answers with the same provider id.

Reading: ``grep '"contact_id":42,' data/outbox/0-999/texts.jsonl`` on the
command line, or :func:`read_texts`. :func:`contact_files` lists one person's
own files (privacy export and erasure use both).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cxm_cli.channels import OutboundMessage, SendResult
from cxm_cli.channels.smtp import build_email
from cxm_cli.errors import ChannelError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

NO_CONTACT_FOLDER = "no-contact"
CONTACTS_PER_FOLDER = 1000
TEXTS_FILE = "texts.jsonl"


def contact_folder(workspace, contact_id: int | None) -> Path:
    """The folder holding a contact's outbox files (shared with 999 others)."""
    if contact_id is None:
        return workspace.outbox_dir / NO_CONTACT_FOLDER
    first = int(contact_id) // CONTACTS_PER_FOLDER * CONTACTS_PER_FOLDER
    return workspace.outbox_dir / f"{first}-{first + CONTACTS_PER_FOLDER - 1}"


def texts_path(workspace, contact_id: int | None) -> Path:
    """The ``texts.jsonl`` a contact's texts are appended to."""
    return contact_folder(workspace, contact_id) / TEXTS_FILE


def contact_files(workspace, contact_id: int, *, partial: bool = False) -> list[Path]:
    """One contact's own outbox files, oldest first (by message id, then time).

    Their ``.eml`` files and, from before texts became lines, their ``.json``
    files and ``outbox/<contact_id>/`` folder. ``texts.jsonl`` is shared by
    the folder's contacts, so it is not one of them (see :func:`read_texts`).
    ``partial`` adds the hidden temporary files of writes a killed runner
    left unfinished (they hold the message too: erasure needs them).
    """
    folder = contact_folder(workspace, contact_id)
    files = sorted(folder.glob(f"{int(contact_id)}-*")) if folder.is_dir() else []
    if partial and folder.is_dir():
        files += sorted(folder.glob(f".{int(contact_id)}-*.tmp"))
    old = workspace.outbox_dir / str(int(contact_id))
    if old.is_dir():
        files = sorted(path for path in old.rglob("*") if path.is_file()) + files
    return [path for path in files if partial or not path.name.startswith(".")]


def texts_files(workspace) -> list[Path]:
    """Every ``texts.jsonl`` of the outbox, folders in contact id order."""
    if not workspace.outbox_dir.is_dir():
        return []
    return sorted(
        workspace.outbox_dir.glob(f"*/{TEXTS_FILE}"),
        key=lambda path: _folder_order(path.parent.name),
    )


def read_texts(workspace, contact_id: int | None = None) -> list[dict[str, Any]]:
    """The texts and voicemail drops in the outbox, in the order written.

    With ``contact_id``, only that contact's (read from their folder alone).
    Torn or unparsable lines are skipped; a message id written more than once
    counts once, as its last line.
    """
    if contact_id is None:
        paths = texts_files(workspace)
    else:
        contact_id = int(contact_id)
        paths = [texts_path(workspace, contact_id)]

    records: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        for number, (_, record) in enumerate(_lines(path)):
            if record is None:
                continue
            if contact_id is not None and record.get("contact_id") != contact_id:
                continue
            message_id = record.get("message_id")
            if isinstance(message_id, int):
                key = ("message", message_id)
            else:
                key = (str(path), number)
            # Re-inserted, so a message id's last line also sets its place.
            records.pop(key, None)
            records[key] = record
    return list(records.values())


def remove_text_lines(path: Path, drop: Callable[[bytes, dict | None], bool]) -> int:
    """Rewrite ``path`` without the lines ``drop(raw_line, record)`` picks.

    ``record`` is None for a torn or unparsable line. Done under the append
    lock: the kept lines go to a temporary file in the same folder, which is
    synced and renamed over the old one (or the file is removed when nothing
    is left). Returns how many lines were removed; other lines stay byte for
    byte.
    """
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            handle = os.open(path, flags)
        except FileNotFoundError:
            return 0
        try:
            _lock(handle)
            if _still_at(path, handle) is None:
                continue
            data = _read_all(handle)
            kept: list[bytes] = []
            removed = 0
            for raw in _split_lines(data):
                line = raw.rstrip(b"\n")
                if line and drop(line, _parse(line)):
                    removed += 1
                else:
                    kept.append(raw)
            if removed:
                _replace(path, b"".join(kept))
            return removed
        finally:
            os.close(handle)


class OutboxChannel:
    name = "outbox"
    # Sending one message id again delivers it once: see the module docstring.
    idempotent = True

    def __init__(self, workspace, kind: str):
        self.workspace = workspace
        self.kind = kind

    def send_many(
        self, items: list[tuple[OutboundMessage, int | None]]
    ) -> list[SendResult | BaseException]:
        """:meth:`send` for many (message, message id) pairs; each one's result
        or the error that stopped it, in order.

        A batch's texts take one append per folder file instead of one each:
        what the runner's batches send most, at the cost of one lock.
        """
        results: list[SendResult | BaseException | None] = [None] * len(items)
        by_path: dict[Path, list[int]] = {}
        paths: dict[int | None, Path] = {}
        for position, (message, message_id) in enumerate(items):
            if message.channel == "email":
                try:
                    results[position] = self.send(message, message_id=message_id)
                except Exception as exc:  # noqa: BLE001 - that message's outcome
                    results[position] = exc
                continue
            key = (
                None
                if message.contact_id is None
                else int(message.contact_id) // CONTACTS_PER_FOLDER
            )
            path = paths.get(key)
            if path is None:
                path = paths[key] = texts_path(self.workspace, message.contact_id)
            by_path.setdefault(path, []).append(position)

        for path, folder_positions in by_path.items():
            positions, records, lines = [], [], []
            for position in folder_positions:
                message, message_id = items[position]
                try:
                    record = self._text_record(message, message_id)
                    line = _line(record)
                except Exception as exc:  # noqa: BLE001 - that message's outcome
                    results[position] = exc
                    continue
                positions.append(position)
                records.append(record)
                lines.append((line, message_id if message.resend else None))
            try:
                written = _append_many(path, lines) if lines else []
            except OSError as exc:
                for position in positions:
                    results[position] = _unwritable(self.workspace, path, exc)
                continue
            log.info(
                "outbox appended %d texts to %s (%d held already)",
                sum(written),
                path.parent.name,
                len(written) - sum(written),
            )
            for position, record in zip(positions, records, strict=True):
                results[position] = SendResult(
                    provider_id=record["provider_id"],
                    status="sent",
                    detail={"path": str(path)},
                )
        return results  # type: ignore[return-value]

    def send(
        self, message: OutboundMessage, *, message_id: int | None = None
    ) -> SendResult:
        if message.channel == "email":
            email = build_email(self.workspace, message)
            token = _file_token(message_id)
            try:
                path = self._write(message.contact_id, token, "eml", email.as_bytes())
            except OSError as exc:
                folder = contact_folder(self.workspace, message.contact_id)
                raise _unwritable(self.workspace, folder, exc) from exc
            log.info("outbox wrote %s for contact %s", path.name, message.contact_id)
            return SendResult(
                provider_id=str(email["Message-ID"]),
                status="sent",
                detail={"path": str(path)},
            )

        record = self._text_record(message, message_id)
        path = self._append_record(
            record, message.contact_id, message_id if message.resend else None
        )
        return SendResult(
            provider_id=record["provider_id"], status="sent", detail={"path": str(path)}
        )

    def _text_record(
        self, message: OutboundMessage, message_id: int | None
    ) -> dict[str, Any]:
        provider_id = self._provider_id(message_id)
        # contact_id before the fields that follow it, so one contact's lines
        # can be found with grep '"contact_id":42,'.
        return {
            "provider_id": provider_id,
            "message_id": message_id,
            "kind": "text",
            "contact_id": message.contact_id,
            "channel": message.channel,
            "to": message.to,
            "from": self.workspace.setting("twilio.from_number"),
            "body": message.body,
            "idempotency_key": message.idempotency_key,
            "headers": message.headers,
            "written_at": _now(),
        }

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
        resend: bool = False,
    ) -> SendResult:
        """Append the drop as a line; ``resend`` (a message id a runner that
        died may have written already) writes nothing if its line is there."""
        provider_id = self._provider_id(message_id)
        record = {
            "provider_id": provider_id,
            "message_id": message_id,
            "kind": "voicemail",
            "contact_id": contact_id,
            "channel": "voicemail",
            "to": to,
            "from": self.workspace.setting("twilio.from_number"),
            "audio_url": audio_url,
            "written_at": _now(),
        }
        path = self._append_record(record, contact_id, message_id if resend else None)
        return SendResult(
            provider_id=provider_id, status="sent", detail={"path": str(path)}
        )

    def _append_record(
        self, record: dict[str, Any], contact_id: int | None, once: int | None
    ) -> Path:
        """Append one text or voicemail line; ``once``: a message id to write
        only if no line holds it yet (a resend)."""
        path = texts_path(self.workspace, contact_id)
        try:
            written = _append(path, _line(record), once=once)
        except OSError as exc:
            raise _unwritable(self.workspace, path, exc) from exc
        log.info(
            "outbox %s %s %s for contact %s",
            "appended" if written else "already held",
            record["kind"],
            record["message_id"],
            contact_id,
        )
        return path

    def _provider_id(self, message_id: int | None) -> str:
        return f"outbox-{_file_token(message_id)}"

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
            _write_all(handle, data)
        finally:
            os.close(handle)
        os.replace(temporary, path)
        return path


def _unwritable(workspace, path: Path, exc: OSError) -> ChannelError:
    """A write the outbox could not make, as a send to try again later (a
    full disk or a folder's permissions can be fixed meanwhile)."""
    try:
        shown = path.relative_to(workspace.root)
    except ValueError:
        shown = path
    return ChannelError(
        f"the outbox cannot write {shown}: {exc.strerror or exc}", transient=True
    )


# ------------------------------------------------------------ texts.jsonl


def _line(record: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines inside strings, so a record is one line.
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _append(path: Path, line: bytes, *, once: int | None = None) -> bool:
    """Append ``line`` to ``path`` under its lock; False when ``once`` (a
    message id) already has a line there and nothing was written."""
    return _append_many(path, [(line, once)])[0]


def _append_many(path: Path, lines: list[tuple[bytes, int | None]]) -> list[bool]:
    """Append each (line, once) to ``path`` with one write under its lock;
    False for a line whose ``once`` (a message id) is in the file already."""
    # Read and write: the last byte is read to find a torn line. No fsync,
    # for the reason given in OutboxChannel._write.
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            handle = os.open(path, flags, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, flags, 0o666)
        try:
            _lock(handle)
            opened = _still_at(path, handle)
            if opened is None:
                # Erasure replaced or removed the file while we waited.
                continue
            held = _held_messages(handle, [once for _, once in lines if once])
            written = [not (once and once in held) for _, once in lines]
            data = b"".join(
                line for (line, _), write in zip(lines, written, strict=True) if write
            )
            size = opened.st_size
            if data and size and _last_byte(handle, size) != b"\n":
                # A writer killed mid-line: its torn line stays a line of its own.
                data = b"\n" + data
            if data:
                _write_all(handle, data)
            return written
        finally:
            os.close(handle)  # releases the lock


def _lock(handle: int) -> None:
    # Limitation: without fcntl (Windows) the outbox takes no lock: two
    # processes appending to one folder's texts.jsonl at once may interleave
    # their lines, and an erasure may drop a line appended meanwhile.
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX)


def _still_at(path: Path, handle: int) -> os.stat_result | None:
    """The open file's status if it is still the one at ``path``, else None."""
    opened = os.fstat(handle)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    if (opened.st_dev, opened.st_ino) != (current.st_dev, current.st_ino):
        return None
    return opened


def _held_messages(handle: int, message_ids: list[int]) -> set[int]:
    """Which of these message ids have a whole line in the file already."""
    if not message_ids:
        return set()
    data = _read_all(handle)
    held = set()
    for message_id in message_ids:
        needle = b'"message_id":%d,' % message_id
        if needle not in data:
            continue
        for raw in _split_lines(data):
            if needle in raw:
                record = _parse(raw.rstrip(b"\n"))
                if record is not None and record.get("message_id") == message_id:
                    held.add(message_id)
                    break
    return held


def _last_byte(handle: int, size: int) -> bytes:
    os.lseek(handle, size - 1, os.SEEK_SET)
    return os.read(handle, 1)


def _read_all(handle: int) -> bytes:
    os.lseek(handle, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(handle, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _split_lines(data: bytes) -> Iterator[bytes]:
    """The lines of ``data`` with their newlines; a torn tail has none."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        yield data[start:end]
        start = end


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:  # torn, or not UTF-8
        return None
    return record if isinstance(record, dict) else None


def _lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for raw in _split_lines(data):
        line = raw.rstrip(b"\n")
        if line:
            yield line, _parse(line)


def _replace(path: Path, data: bytes) -> None:
    if not data.strip():
        path.unlink()
        return
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    handle = os.open(temporary, flags, 0o666)
    try:
        _write_all(handle, data)
        # Erasure must not come back after a power cut as a half-empty file.
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(temporary, path)


def _folder_order(name: str) -> tuple[int, str]:
    first = name.partition("-")[0]
    return (int(first), name) if first.isdigit() else (1 << 62, name)


def _file_token(message_id: int | None) -> str:
    """A file's name before its suffix: the message id's, else a fresh one."""
    # Limitation: names from a message id and time-stamped names (a message
    # written straight to the channel) list in send order among themselves,
    # not with each other.
    if message_id is not None:
        # Zero-padded, so a contact's files list in send order.
        return f"msg-{message_id:09d}"
    return f"{_stamp()}-{secrets.token_hex(6)}"


def _stamp() -> str:
    # Wall-clock time only names the file so a folder lists in send order.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _now() -> str:
    # Wall-clock time of the write, for a person reading the file; the
    # message row holds the time cxm's clock gave the send.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


# ------------------------------------------------------------ by message id
# A merged contact's messages move to the kept contact in the database, but
# their outbox lines and files keep the merged contact's id and folder; these
# find them by message id instead, in every folder.

_MESSAGE_ID_IN_LINE = re.compile(rb'"message_id":(\d+),')
# <contact>-msg-<id>.<suffix>, msg-<id>.<suffix> (no contact), and the hidden
# temporary files of unfinished writes: .<name>.<hex>.tmp
_MESSAGE_FILE = re.compile(r"^\.?(?:\d+-)?msg-(\d{9,})\.")


def texts_of_messages(workspace, message_ids) -> list[dict[str, Any]]:
    """The outbox texts and voicemail drops of these message ids, from every
    folder's ``texts.jsonl``, in the order written (a message id written more
    than once counts once, as its last line)."""
    wanted = {int(message_id) for message_id in message_ids}
    if not wanted:
        return []

    records: dict[int, dict[str, Any]] = {}
    for path in texts_files(workspace):
        for line, record in _lines(path):
            # Parse only the lines whose message id is wanted.
            found = _MESSAGE_ID_IN_LINE.search(line)
            if found is None or int(found.group(1)) not in wanted or record is None:
                continue
            message_id = record.get("message_id")
            if message_id in wanted:
                records.pop(message_id, None)
                records[message_id] = record
    return list(records.values())


def files_of_messages(workspace, message_ids, *, partial: bool = False) -> list[Path]:
    """The outbox files named for these message ids (``*-msg-<id>.*``) in
    every folder, sorted; ``partial`` adds the hidden temporary files of
    writes left unfinished, as in :func:`contact_files`."""
    wanted = {int(message_id) for message_id in message_ids}
    if not wanted or not workspace.outbox_dir.is_dir():
        return []

    files = []
    for folder in workspace.outbox_dir.iterdir():
        if not folder.is_dir():
            continue
        # One listing per folder, whatever the number of message ids.
        for path in folder.iterdir():
            hidden = path.name.startswith(".")
            if hidden and not (partial and path.name.endswith(".tmp")):
                continue
            found = _MESSAGE_FILE.match(path.name)
            if found and int(found.group(1)) in wanted and path.is_file():
                files.append(path)
    return sorted(files)
