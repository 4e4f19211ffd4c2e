"""Records to leads, streamed in chunks, here or in a worker process.

Reading, parsing and normalising (the CPU-heavy half of an import) need no
database, so for large files they run in a second process while this one
writes: the worker sends chunks of mapped records through a bounded queue,
which keeps memory flat however large the file. Small files are mapped in
process, where starting a worker would cost more than it saves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queues
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cxm_cli.errors import InputError
from cxm_cli.importing.reader import (
    BrokenRecord,
    CsvRecords,
    JsonLinesRecords,
    is_blank,
)
from cxm_cli.importing.records import (
    DATE_FIELDS,
    Lead,
    MapperSettings,
    RecordMapper,
    Reject,
)
from cxm_cli.importing.values import DateOrderVote
from cxm_cli.importing.vcard import VCardRecords

log = logging.getLogger(__name__)

CHUNK = 1000
QUEUE_CHUNKS = 4  # chunks in flight: bounds the memory the worker can run ahead
# Files below this size are mapped in process.
WORKER_MIN_BYTES = 4 * 1024 * 1024
PARENT_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class SourceSpec:
    """Everything needed to reopen the input, in this or another process."""

    path: Path
    name: str
    encoding: str
    input_format: str  # csv | jsonl | vcard
    delimiter: str | None

    def open(self):
        if self.input_format == "csv":
            return CsvRecords(self.path, self.encoding, self.delimiter, self.name)
        if self.input_format == "jsonl":
            return JsonLinesRecords(self.path, self.encoding, self.name)
        return VCardRecords(self.path, self.encoding, self.name)


@dataclass
class Mapped:
    number: int
    result: Lead | Reject | None  # None: a blank line, skipped
    cells: list[str] | None = None  # the record's cells, kept for rejects only


def use_worker(size: int, forced: bool | None) -> bool:
    if forced is not None:
        return forced
    return size >= WORKER_MIN_BYTES and (os.cpu_count() or 1) > 1


def mapped_chunks(
    spec: SourceSpec, settings: MapperSettings, header, *, worker: bool
) -> Iterator[tuple]:
    """("notes", [text]) once, then ("chunk", bytes_read, [Mapped]) repeatedly."""
    if not worker:
        yield from _produce(spec, settings, header)
        return
    yield from _from_worker(spec, settings, header)


# ---------------------------------------------------------------- producing


def _produce(spec: SourceSpec, settings: MapperSettings, header) -> Iterator[tuple]:
    records = spec.open()
    mapper = RecordMapper(settings)
    if header is not None:
        mapper.prepare(header)
    notes: list[str] = []
    if not settings.date_format:
        settings.date_orders = infer_date_orders(records, mapper, header, notes)
    yield ("notes", notes)

    chunk: list[Mapped] = []
    keep = settings.keep_cells
    for item in records:
        chunk.append(_map_one(mapper, header, item, keep))
        if len(chunk) >= CHUNK:
            yield ("chunk", records.position(), chunk)
            chunk = []
    if chunk:
        yield ("chunk", records.position(), chunk)


def _map_one(mapper: RecordMapper, header, item, keep: bool) -> Mapped:
    if header is not None:
        number, row = item
        if isinstance(row, BrokenRecord):
            column = header[row.column] if row.column < len(header) else ""
            return Mapped(number, Reject(number, column, row.reason), list(row))
        if is_blank(row):
            return Mapped(number, None)
        result = mapper.map_row(number, header, row)
        keep_row = keep or isinstance(result, Reject)
        return Mapped(number, result, row if keep_row else None)

    number, pairs, raw, problem = item
    if pairs is None:
        return Mapped(number, Reject(number, "", problem), [raw])
    if not pairs:
        return Mapped(number, None)
    result = mapper.map_pairs(number, pairs)
    keep_raw = keep or isinstance(result, Reject)
    return Mapped(number, result, [raw] if keep_raw else None)


def infer_date_orders(records, mapper, header, notes: list[str]) -> dict[str, str]:
    """Day/month order per date column, from the values that settle it."""
    votes: dict[str, DateOrderVote] = {}
    if header is not None:
        columns = [
            (index, key)
            for index, (name, key) in enumerate(zip(header, mapper.keys, strict=True))
            if mapper.role(name)[0] in DATE_FIELDS
        ]
        if not columns:
            return {}
        for _, name in columns:
            votes.setdefault(name, DateOrderVote())
        for _, row in records:
            if isinstance(row, BrokenRecord):
                continue
            for index, name in columns:
                if index < len(row) and row[index]:
                    votes[name].feed(row[index])
    else:
        for _, pairs, _, _ in records:
            for key, value in pairs or []:
                if mapper.role(key)[0] in DATE_FIELDS:
                    votes.setdefault(key, DateOrderVote()).feed(value)

    orders = {}
    for name, vote in votes.items():
        order, note = vote.decide(mapper.settings.region)
        orders[name] = order
        if note:
            notes.append(f"{name}: {note}; use --date-format to say otherwise")
    return orders


# ---------------------------------------------------------------- the worker


def _from_worker(spec, settings, header) -> Iterator[tuple]:
    context = multiprocessing.get_context("spawn")
    channel = context.Queue(maxsize=QUEUE_CHUNKS)
    process = context.Process(
        target=_worker_main,
        args=(spec, settings, header, channel, os.getpid()),
        name="cxm-import-reader",
        daemon=True,
    )
    process.start()
    log.debug("import worker %s started", process.pid)
    try:
        while True:
            try:
                message = channel.get(timeout=PARENT_CHECK_SECONDS)
            except queues.Empty:
                if not process.is_alive():
                    raise InputError(
                        f"{spec.name}: the import worker stopped unexpectedly"
                    ) from None
                continue
            if message[0] == "done":
                break
            if message[0] == "error":
                raise InputError(message[1], hint=message[2])
            yield message
    finally:
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)
        channel.close()


def _worker_main(spec, settings, header, channel, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for message in _produce(spec, settings, header):
            _send(channel, message, parent_pid)
        _send(channel, ("done",), parent_pid)
    except InputError as exc:
        _send(channel, ("error", exc.message, exc.hint), parent_pid)


def _send(channel, message, parent_pid: int) -> None:
    """Put a message, giving up if the parent died (kill -9 leaves no reader)."""
    while True:
        try:
            channel.put(message, timeout=PARENT_CHECK_SECONDS)
            return
        except queues.Full:
            if os.getppid() != parent_pid:
                os._exit(1)
