"""Importing one file: read, map, normalise, merge, all in one transaction.

The batch is atomic: every row is applied inside one write transaction
(event hooks included), so an interrupted import (Ctrl-C, kill -9, a crash)
leaves the workspace as it was. The rejects file is written next to the
input under a temporary name and only renamed into place after the commit.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cxm_cli.errors import InputError
from cxm_cli.importing import batches
from cxm_cli.importing.formats import (
    LAYOUTS_BY_NAME,
    detect_layout,
    get_layout,
    parse_map_options,
)
from cxm_cli.importing.merge import ON_CONFLICT, ContactMerger
from cxm_cli.importing.reader import (
    DELIMITERS,
    CsvRecords,
    JsonLinesRecords,
    detect_delimiter,
    detect_encoding,
    is_blank,
    open_input,
)
from cxm_cli.importing.records import (
    DATE_FIELDS,
    MapperSettings,
    RecordMapper,
    Reject,
)
from cxm_cli.importing.values import DateOrderVote
from cxm_cli.importing.vcard import VCardRecords, is_vcard
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

INPUT_FORMATS = ("csv", "jsonl", "vcard")
WARNING_SAMPLES = 200
PROGRESS_EVERY = 500


@dataclass
class ImportOptions:
    format: str | None = None  # force a layout (cxm leads formats)
    input_format: str | None = None  # csv | jsonl | vcard; detected when None
    encoding: str | None = None
    delimiter: str | None = None
    region: str | None = None  # phone region for numbers without a country code
    date_format: str | None = None  # MDY | DMY | YMD | a strptime pattern
    mapping: list[str] = field(default_factory=list)  # COLUMN=FIELD
    source: str | None = None
    tags: list[str] = field(default_factory=list)
    on_conflict: str = "fill"
    dry_run: bool = False
    rejects_path: Path | None = None
    run_hooks: bool = True
    # progress(bytes_read, total_bytes, records_done)
    progress: Callable[[int, int, int], None] | None = None


@dataclass
class ImportSummary:
    batch_id: int | None
    file: str
    format: str
    input_format: str
    encoding: str
    delimiter: str | None
    records: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped: int = 0  # blank and delimiter-only lines
    merged: int = 0  # rows that joined a contact made by an earlier row
    warnings: int = 0
    warning_samples: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # file-level assumptions
    rejects_path: str | None = None
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "skipped": self.skipped,
        }

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _DryRunRollback(Exception):
    """Raised inside the transaction to discard a dry run's writes."""


def import_file(workspace, db, path_or_stream, *, clock, options: ImportOptions):
    """Import a path, ``-`` (stdin) or a binary stream; returns an ImportSummary."""
    if options.on_conflict not in ON_CONFLICT:
        raise InputError(
            f"--on-conflict {options.on_conflict!r}: use one of {', '.join(ON_CONFLICT)}"
        )
    overrides = parse_map_options(options.mapping)
    region = (options.region or workspace.phone_region).upper()
    date_format = _check_date_format(options.date_format)

    with open_input(path_or_stream) as input_file:
        encoding = detect_encoding(input_file.path, options.encoding)
        input_format = _input_format(input_file, encoding, options.input_format)
        delimiter = None
        if input_format == "csv":
            delimiter = detect_delimiter(input_file.path, encoding, options.delimiter)
            records = CsvRecords(input_file.path, encoding, delimiter, input_file.name)
            header = records.header()
            if not any(header):
                raise InputError(f"{input_file.name}: empty file or no header row")
            layout = (
                get_layout(options.format) if options.format else detect_layout(header)
            )
        elif input_format == "jsonl":
            records = JsonLinesRecords(input_file.path, encoding, input_file.name)
            header = None
            layout = (
                get_layout(options.format) if options.format else _jsonl_layout(records)
            )
        else:
            records = VCardRecords(input_file.path, encoding, input_file.name)
            header = None
            layout = get_layout(options.format or "vcard")

        summary = ImportSummary(
            batch_id=None,
            file=input_file.name,
            format=layout.name,
            input_format=input_format,
            encoding=encoding,
            delimiter=DELIMITERS.get(delimiter, delimiter) if delimiter else None,
            dry_run=options.dry_run,
        )
        settings = MapperSettings(
            layout=layout,
            overrides=overrides,
            region=region,
            zone=workspace.timezone,
            date_orders={},
            date_format=date_format,
            source=options.source,
            tags=list(options.tags),
            file_label=input_file.name,
        )
        mapper = RecordMapper(settings)
        if header is not None:
            mapper.prepare(header)
        if not date_format:
            settings.date_orders = _infer_date_orders(
                records, mapper, header, region, summary
            )

        rejects = _RejectsFile(
            options.rejects_path or _rejects_location(workspace, input_file),
            header,
        )
        try:
            _run(
                workspace,
                db,
                records,
                mapper,
                header,
                summary,
                rejects,
                clock,
                options,
                input_file.size,
            )
        except _DryRunRollback:
            pass
        except BaseException:
            rejects.discard()
            raise
        if options.dry_run:
            rejects.discard()
            summary.rejects_path = None
        elif summary.rejected:
            summary.rejects_path = str(rejects.commit())
        else:
            rejects.discard()
    return summary


def _run(
    workspace, db, records, mapper, header, summary, rejects, clock, options, size
):
    layout = mapper.settings.layout
    option_record = {
        k: v
        for k, v in {
            "format": options.format,
            "region": options.region,
            "source": options.source,
            "tags": options.tags,
            "on_conflict": options.on_conflict,
            "map": options.mapping,
            "date_format": options.date_format,
        }.items()
        if v
    }
    warning_kinds: Counter[str] = Counter()
    with write_transaction(db):
        batch_id = batches.start_batch(
            db,
            file=summary.file,
            format=layout.name,
            encoding=summary.encoding,
            options=option_record,
            clock=clock,
        )
        summary.batch_id = batch_id
        merger = ContactMerger(
            db,
            clock,
            batch_id=batch_id,
            file_label=Path(summary.file).name,
            default_source=options.source or layout.name,
            on_conflict=options.on_conflict,
            run_hooks=options.run_hooks and not options.dry_run,
        )
        for item in records:
            number = item[0]
            summary.records += 1
            lead = _map(mapper, header, item, summary)
            if lead is None:
                continue
            if isinstance(lead, Reject):
                _reject(summary, rejects, lead, item, warning_kinds)
            else:
                _note_warnings(summary, number, lead.warnings, warning_kinds)
                result = merger.apply(lead)
                if result.outcome == "rejected":
                    _reject(
                        summary,
                        rejects,
                        Reject(number, "", result.reason),
                        item,
                        warning_kinds,
                    )
                else:
                    setattr(
                        summary, result.outcome, getattr(summary, result.outcome) + 1
                    )
                    summary.merged += int(result.merged)
            if options.progress and summary.records % PROGRESS_EVERY == 0:
                options.progress(records.position(), size, summary.records)

        batches.finish_batch(
            db,
            batch_id,
            summary.counts(),
            rejects_path=str(rejects.path) if summary.rejected else None,
            clock=clock,
        )
        if options.dry_run:
            raise _DryRunRollback()
    if options.progress:
        options.progress(size, size, summary.records)
    log.info(
        "batch %s: %d records, %d created, %d updated, %d unchanged, %d rejected",
        batch_id,
        summary.records,
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected,
    )


def _map(mapper: RecordMapper, header, item, summary: ImportSummary):
    """The lead or reject for one record; None for a skipped blank line."""
    if header is not None:
        number, row = item
        if is_blank(row):
            summary.skipped += 1
            return None
        return mapper.map_row(number, header, row)
    number, pairs, _raw, problem = item
    if pairs is None:
        return Reject(number, "", problem)
    if not pairs:
        summary.skipped += 1
        return None
    return mapper.map_pairs(number, pairs)


def _reject(summary, rejects, reject: Reject, item, warning_kinds) -> None:
    summary.rejected += 1
    rejects.add(reject, item)
    _note_warnings(summary, reject.row, reject.warnings, warning_kinds, count=False)


def _note_warnings(summary, number, warnings, kinds, *, count: bool = True) -> None:
    for column, text in warnings:
        if count:
            summary.warnings += 1
        if len(summary.warning_samples) < WARNING_SAMPLES and count:
            summary.warning_samples.append(
                {"row": number, "column": column, "warning": text}
            )


def _infer_date_orders(records, mapper, header, region, summary) -> dict[str, str]:
    """Day/month order per date column, from the values that settle it."""
    votes: dict[str, DateOrderVote] = {}
    if header is not None:
        columns = [
            (index, name)
            for index, name in enumerate(header)
            if mapper.role(name)[0] in DATE_FIELDS
        ]
        if not columns:
            return {}
        for name in {n for _, n in columns}:
            votes[name] = DateOrderVote()
        for _, row in records:
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
        order, note = vote.decide(region)
        orders[name] = order
        if note:
            summary.notes.append(f"{name}: {note}; use --date-format to say otherwise")
    return orders


def _jsonl_layout(records):
    """The layout the first object's keys point to; plain JSON Lines otherwise."""
    for _, pairs, _, _ in records:
        if pairs:
            layout = detect_layout([key for key, _ in pairs])
            return layout if layout.name != "generic" else get_layout("jsonl")
    return get_layout("jsonl")


def _check_date_format(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if "%" in text:
        return text
    upper = text.upper().replace("/", "").replace("-", "").replace(".", "")
    mapping = {
        "MDY": "MDY",
        "MMDDYYYY": "MDY",
        "DMY": "DMY",
        "DDMMYYYY": "DMY",
        "YMD": "YMD",
        "YYYYMMDD": "YMD",
    }
    if upper not in mapping:
        raise InputError(
            f"--date-format {value!r}: use MDY, DMY, YMD or a pattern like %d.%m.%Y"
        )
    return mapping[upper]


def _input_format(input_file, encoding: str, forced: str | None) -> str:
    if forced:
        name = forced.strip().lower().replace("vcf", "vcard").replace("ndjson", "jsonl")
        if name not in INPUT_FORMATS:
            raise InputError(
                f"--input-format {forced!r}: use one of {', '.join(INPUT_FORMATS)}"
            )
        return name
    suffix = Path(input_file.name).suffix.lower()
    if suffix in (".vcf", ".vcard") or is_vcard(input_file.path, encoding):
        return "vcard"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "csv"


def _rejects_location(workspace, input_file) -> Path:
    if input_file.is_stdin:
        return workspace.data_dir / "rejects-stdin.csv"
    path = Path(input_file.path)
    beside = path.with_name(f"{path.stem}.rejects.csv")
    writable_bits = path.parent.stat().st_mode & 0o222
    if writable_bits and os.access(path.parent, os.W_OK):
        return beside
    # A read-only folder (a shared export, a mounted drive): keep it in the
    # workspace instead, under a name that still says which file it was.
    return workspace.data_dir / f"{path.stem}.rejects.csv"


class _RejectsFile:
    """Rejected records with row number, column and reason, plus their cells.

    Written to a temporary file beside the final one and renamed into place
    only after the import committed, so an interrupted import leaves no
    rejects file claiming rows were dealt with.
    """

    def __init__(self, path: Path, header: list[str] | None):
        self.path = Path(path)
        self.header = header
        self._handle = None
        self._writer = None
        self._temp: str | None = None

    def add(self, reject: Reject, item) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._temp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
            )
            self._handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            extra = list(self.header) if self.header is not None else ["record"]
            self._writer.writerow(["row", "column", "reason", *extra])
        if self.header is not None:
            cells = list(item[1])
        else:
            cells = [item[2]]
        self._writer.writerow([reject.row, reject.column, reject.reason, *cells])

    def commit(self) -> Path:
        if self._handle is not None:
            self._handle.close()
            os.chmod(self._temp, 0o644)
            os.replace(self._temp, self.path)
            self._handle = self._writer = self._temp = None
        return self.path

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._handle = self._writer = self._temp = None


def known_layout_names() -> list[str]:
    return list(LAYOUTS_BY_NAME)
