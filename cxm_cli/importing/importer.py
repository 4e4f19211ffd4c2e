"""Importing one file: read, map, normalise, merge, all in one transaction.

The batch is atomic: every row is applied inside one write transaction
(event hooks included), so an interrupted import (Ctrl-C, kill -9, a crash)
leaves the workspace as it was. The rejects file is written next to the
input under a temporary name and only renamed into place after the commit.

Limitation: the transaction holds the workspace's write lock for the whole
import, so a runner or web form that writes meanwhile waits (up to the 30 s
busy timeout, then fails and retries later); very large imports are best run
when nothing else is sending.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import phonenumbers

from cxm_cli.errors import ConfigError, InputError
from cxm_cli.events import hooks_share_transaction
from cxm_cli.importing import batches
from cxm_cli.importing.formats import (
    LAYOUTS_BY_NAME,
    compact,
    detect_layout,
    get_layout,
    parse_map_options,
    role_for,
)
from cxm_cli.importing.merge import ON_CONFLICT, ContactMerger
from cxm_cli.importing.pipeline import Mapped, SourceSpec, mapped_chunks, use_worker
from cxm_cli.importing.reader import (
    DELIMITERS,
    detect_delimiter,
    detect_encoding,
    open_input,
)
from cxm_cli.importing.records import MapperSettings, Reject
from cxm_cli.importing.vcard import is_vcard
from cxm_cli.outfiles import refuse_workspace_file, workspace_file_at
from cxm_cli.store import write_transaction

log = logging.getLogger(__name__)

INPUT_FORMATS = ("csv", "jsonl", "vcard")
WARNING_SAMPLES = 200
# A rejects file's own first columns, before the rejected record's cells.
REJECTS_COLUMNS = ("row", "column", "reason")


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
    # Existing customers or contacts, not new leads: contact.imported instead
    # of lead.created, so no lead sequence, first stage or lead count.
    existing: bool = False
    dry_run: bool = False
    rejects_path: Path | None = None
    run_hooks: bool = True
    # progress(bytes_read, total_bytes, records_done)
    progress: Callable[[int, int, int], None] | None = None
    # Map records in a worker process: None decides by file size.
    worker: bool | None = None


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
    # Contacts this import enrolled in follow-up sequences, and per sequence
    # (a dry run counts the ones it would enrol).
    enrolled: int = 0
    enrolled_by_sequence: dict[str, int] = field(default_factory=dict)
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
            f"--on-conflict {options.on_conflict!r}: "
            f"use one of {', '.join(ON_CONFLICT)}"
        )
    overrides = parse_map_options(options.mapping)
    region = _check_region(options.region, workspace.phone_region)
    date_format = _check_date_format(options.date_format)

    with open_input(path_or_stream) as input_file:
        encoding = detect_encoding(
            input_file.path, options.encoding, name=input_file.name
        )
        input_format = _input_format(input_file, encoding, options.input_format)
        delimiter = None
        if input_format == "csv":
            delimiter = detect_delimiter(input_file.path, encoding, options.delimiter)
        spec = SourceSpec(
            input_file.path, input_file.name, encoding, input_format, delimiter
        )
        header, layout = _header_and_layout(spec, options.format)
        _check_map_columns(options.mapping, header, spec.name)
        leading = rejects_columns(header)
        if header is not None and not options.format and not options.mapping:
            _check_header_is_not_a_person(header[leading:], layout, spec.name)

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
            keep_cells=_has_suppressions(db),
            skip_leading=leading,
        )
        if leading:
            summary.notes.append(
                f"{spec.name} is a rejects file: its row, column and reason "
                "columns are not imported"
            )
        chosen = options.rejects_path is not None
        rejects_path = options.rejects_path or _rejects_location(workspace, input_file)
        _check_rejects_path(
            Path(rejects_path),
            Path(input_file.path),
            chosen=chosen,
            workspace_root=workspace.root,
        )
        rejects = _RejectsFile(
            rejects_path,
            header,
            drop=leading,
            replace=chosen,
            dry_run=options.dry_run,
        )
        chunks = mapped_chunks(
            spec,
            settings,
            header,
            worker=use_worker(input_file.size, options.worker),
        )
        try:
            # One transaction for the whole file, rolled back whole on any
            # error, so the hooks of every new lead need no savepoints.
            with _sequences_read_once(workspace), hooks_share_transaction():
                _run(
                    db,
                    chunks,
                    summary,
                    rejects,
                    clock,
                    options,
                    input_file.size,
                    layout,
                )
        except _DryRunRollback:
            pass
        except BaseException:
            rejects.discard()
            raise
        finally:
            chunks.close()
        if options.dry_run:
            rejects.discard()
            summary.rejects_path = None
        elif summary.rejected:
            summary.rejects_path = str(rejects.commit())
        else:
            rejects.discard()
    return summary


def _sequences_read_once(workspace):
    """Sequence files read once for the batch, not once per lead.created hook."""
    try:
        from cxm_cli.sequences import pinned_sequences
    except ImportError:
        return contextlib.nullcontext()
    return pinned_sequences(workspace)


def _has_suppressions(db) -> bool:
    row = db.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()
    return row is not None


def _header_and_layout(spec: SourceSpec, forced: str | None):
    """The CSV header (None for JSON Lines and vCards) and the layout to use."""
    if spec.input_format == "csv":
        header = spec.open().header()
        if not any(header):
            raise InputError(f"{spec.name}: empty file or no header row")
        if forced:
            return header, get_layout(forced)
        return header, detect_layout(header[rejects_columns(header) :])
    if spec.input_format == "jsonl":
        return None, get_layout(forced) if forced else _jsonl_layout(spec.open())
    return None, get_layout(forced or "vcard")


def rejects_columns(header: list[str] | None) -> int:
    """How many leading columns are a rejects file's own (row, column, reason):
    a fixed rejects file imported again brings only the original columns."""
    if header is None or len(header) <= len(REJECTS_COLUMNS):
        return 0
    leading = tuple(compact(h) for h in header[: len(REJECTS_COLUMNS)])
    return len(REJECTS_COLUMNS) if leading == REJECTS_COLUMNS else 0


def _check_map_columns(mapping: list[str], header: list[str] | None, name) -> None:
    """A --map naming a column the file lacks is a typo, refused before import."""
    if header is None:
        # Limitation: JSON Lines keys and vCard properties vary per record, so
        # a --map key that no record has is not caught for those inputs.
        return
    present = {compact(h) for h in header}
    for value in mapping:
        column = value.partition("=")[0].strip()
        if compact(column) not in present:
            listed = ", ".join(h for h in header if h.strip())
            raise InputError(
                f"--map {value!r}: {name} has no column {column!r}",
                hint=f"its columns: {listed}",
            )


def _check_rejects_path(
    path: Path, input_path: Path, *, chosen: bool, workspace_root: Path
) -> None:
    """Refuse a rejects location that cannot be written before any row is
    imported: finding out after the commit would leave the rejected rows
    nowhere.

    A ``--rejects`` file the user ``chosen`` replaces a regular file there,
    but never one of the workspace's own files (its database, settings,
    sequences, templates), a folder, symbolic link, device, pipe or socket.
    The default location never replaces anything (see :func:`_unused_name`).
    """
    hint = "choose another file with --rejects FILE.csv"
    refuse_workspace_file(path, f"cannot write rejected rows to {path}", workspace_root)
    if chosen:
        what = _not_a_regular_file(path)
        if what:
            raise InputError(
                f"cannot write rejected rows to {path}: it is {what}", hint=hint
            )
        if path.exists() and path.resolve() == input_path.resolve():
            raise InputError(
                f"cannot write rejected rows to {path}: it is the file being imported",
                hint=hint,
            )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # missing folders are made on the first reject
    if not folder.is_dir():
        raise InputError(
            f"cannot write rejected rows to {path}: {folder} is not a folder",
            hint=hint,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write rejected rows to {path}: {folder} is not writable",
            hint=hint,
        )


def _not_a_regular_file(path: Path) -> str | None:
    """What is at ``path`` if it is something a rejects file must not replace
    (the link itself for a symbolic link, not what it points to); None when
    nothing or a regular file is there."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # nothing there (or no way there: the folder checks say why)
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "a device, not a regular file"


# A first row holding an address or a number, and no column name cxm knows,
# is a person: a file saved without its header row.
_EMAIL_CELL = re.compile(r"[^\s@,;<>\"]+@[^\s@,;<>\"]+\.[A-Za-z]{2,}")
_PHONE_CELL = re.compile(r"\+?[\d\s().\-/]+")
_DATE_CELL = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")


def _check_header_is_not_a_person(header: list[str], layout, name: str) -> None:
    """Refuse a CSV whose first row is a person rather than column names:
    read as the header it would lose that person and misread every row."""
    first: tuple[int, str] | None = None
    for number, cell in enumerate(header, 1):
        kind = _person_value(cell)
        if kind:
            first = first or (number, kind)
        elif cell.strip() and role_for(layout, cell, {})[0] != "custom":
            return  # a known column name: a header after all
    if first is None:
        return
    number, kind = first
    raise InputError(
        f"{name}: the first row looks like a person, not column names "
        f"(cell {number} is {kind})",
        hint="add a header row naming the columns (for example Name,Email,Phone); "
        "if that row is the header, pass --format or --map to import it as it is",
    )


def _person_value(cell: str) -> str | None:
    text = cell.strip()
    if _EMAIL_CELL.fullmatch(text):
        return "an email address"
    if _DATE_CELL.fullmatch(text) or not _PHONE_CELL.fullmatch(text):
        return None
    digits = sum(ch.isdigit() for ch in text)
    return "a phone number" if 7 <= digits <= 15 else None


def _run(db, chunks, summary, rejects, clock, options, size, layout):
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
            "existing": options.existing,
        }.items()
        if v
    }
    with write_transaction(db):
        # Enrollments are only added, by the one writer holding this
        # transaction: every one above this id was made by this import.
        last_enrollment = _last_enrollment_id(db)
        batch_id = batches.start_batch(
            db,
            file=summary.file,
            format=layout.name,
            encoding=summary.encoding,
            options=option_record,
            clock=clock,
        )
        summary.batch_id = batch_id
        rejects.name_for_batch(batch_id)
        merger = ContactMerger(
            db,
            clock,
            batch_id=batch_id,
            file_label=Path(summary.file).name,
            default_source=options.source or layout.name,
            on_conflict=options.on_conflict,
            # A dry run runs the hooks too, to tell who would be enrolled;
            # its rollback undoes them with everything else.
            run_hooks=options.run_hooks,
            existing=options.existing,
        )
        for message in chunks:
            if message[0] == "notes":
                summary.notes.extend(message[1])
                continue
            _, position, items = message
            for item in items:
                _apply(merger, item, summary, rejects)
            if options.progress:
                options.progress(position, size, summary.records)

        merger.flush()
        _count_enrollments(db, last_enrollment, summary)
        batches.finish_batch(
            db,
            batch_id,
            summary.counts(),
            rejects_path=str(rejects.path) if summary.rejected else None,
            clock=clock,
        )
        if options.dry_run:
            raise _DryRunRollback()
    log.info(
        "batch %s: %d records, %d created, %d updated, %d unchanged, %d rejected",
        batch_id,
        summary.records,
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected,
    )


def _last_enrollment_id(db) -> int:
    return db.conn.execute("SELECT COALESCE(MAX(id), 0) FROM enrollments").fetchone()[0]


def _count_enrollments(db, after_id: int, summary: ImportSummary) -> None:
    """How many contacts the batch's events enrolled, so a wave of automated
    messages is no surprise."""
    rows = db.conn.execute(
        "SELECT sequence, COUNT(DISTINCT contact_id) FROM enrollments"
        " WHERE id > ? GROUP BY sequence ORDER BY sequence",
        [after_id],
    ).fetchall()
    summary.enrolled_by_sequence = {sequence: count for sequence, count in rows}
    summary.enrolled = db.conn.execute(
        "SELECT COUNT(DISTINCT contact_id) FROM enrollments WHERE id > ?",
        [after_id],
    ).fetchone()[0]


def _apply(
    merger: ContactMerger, item: Mapped, summary: ImportSummary, rejects
) -> None:
    summary.records += 1
    result = item.result
    if result is None:
        summary.skipped += 1
        return
    if isinstance(result, Reject):
        summary.rejected += 1
        rejects.add(result, item.cells)
        return

    _note_warnings(summary, item.number, result.warnings)
    outcome = merger.apply(result)
    if outcome.outcome == "rejected":
        summary.rejected += 1
        cells = item.cells if item.cells is not None else []
        rejects.add(Reject(item.number, "", outcome.reason), cells)
        return
    setattr(summary, outcome.outcome, getattr(summary, outcome.outcome) + 1)
    summary.merged += int(outcome.merged)


def _note_warnings(summary: ImportSummary, number: int, warnings) -> None:
    for column, text in warnings:
        summary.warnings += 1
        if len(summary.warning_samples) < WARNING_SAMPLES:
            summary.warning_samples.append(
                {"row": number, "column": column, "warning": text}
            )


def _jsonl_layout(records):
    """The layout the first object's keys point to; plain JSON Lines otherwise."""
    for _, pairs, _, _ in records:
        if pairs:
            layout = detect_layout([key for key, _ in pairs])
            return layout if layout.name != "generic" else get_layout("jsonl")
    return get_layout("jsonl")


def _check_region(given: str | None, workspace_region: str) -> str:
    """The phone region to read numbers in; an unknown one would drop them all."""
    example = "use a two-letter country code such as US, GB, DE or AU"
    if given is not None:
        region = given.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise InputError(f"--region {given!r} is not a phone region; {example}")
        return region
    region = str(workspace_region).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"cxm.toml: business.phone_region {workspace_region!r} is not a phone "
            f"region; {example}",
            hint="or pass --region for this import",
        )
    return region


def _check_date_format(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if "%" in text:
        return _check_date_pattern(value, text)
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


def _check_date_pattern(value: str, pattern: str) -> str:
    """A strptime pattern that can read back a date it wrote, else an error.

    Caught here, before any row is read, rather than as a warning on every
    date in the file.
    """
    sample = datetime(2001, 2, 3, 4, 5, 6)
    try:
        written = sample.strftime(pattern)
        read = datetime.strptime(written, pattern)
    except ValueError as exc:
        raise InputError(
            f"--date-format {value!r} is not a date pattern ({exc})",
            hint="use MDY, DMY, YMD or a pattern like %d.%m.%Y",
        ) from exc
    if read.date() != sample.date():
        raise InputError(
            f"--date-format {value!r} must name the day, month and year",
            hint="for example %d.%m.%Y or %Y-%m-%d",
        )
    return pattern


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
        return workspace.data_dir / "rejects-stdin-batch-{batch}.csv"
    path = Path(input_file.path)
    beside = path.with_name(f"{path.stem}.rejects.csv")
    writable_bits = path.parent.stat().st_mode & 0o222
    if (
        writable_bits
        and os.access(path.parent, os.W_OK)
        and not workspace_file_at(beside, workspace.root)
    ):
        return beside
    # A read-only folder (a shared export, a mounted drive) or one the
    # workspace keeps for itself (sequences/, templates/): keep it in data/
    # instead, under a name that still says which file it was.
    return workspace.data_dir / f"{path.stem}.rejects.csv"


class _RejectsFile:
    """Rejected records with row number, column and reason, plus their cells.

    Written to a temporary file beside the final one and renamed into place
    only after the import committed, so an interrupted import leaves no
    rejects file claiming rows were dealt with. A file the user named
    (``replace``) takes the place of a regular file there; the default
    location never replaces anything. A dry run writes nothing, not even a
    folder.
    """

    def __init__(
        self,
        path: Path,
        header: list[str] | None,
        *,
        drop: int = 0,
        replace: bool = True,
        dry_run: bool = False,
    ):
        self.path = Path(path)
        self.header = header[drop:] if header is not None else None
        self.drop = drop  # leading columns of an imported rejects file
        self.replace = replace
        self.dry_run = dry_run
        self._handle = None
        self._writer = None
        self._temp: str | None = None

    def name_for_batch(self, batch_id: int) -> None:
        """The final name, once the batch has an id ({batch} in the path)."""
        path = Path(str(self.path).replace("{batch}", str(batch_id)))
        self.path = path if self.replace else _unused_name(path, batch_id)

    def add(self, reject: Reject, cells: list[str] | None) -> None:
        if self.dry_run:
            return
        if self._writer is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, self._temp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
                )
            except OSError as exc:  # the folder changed since it was checked
                raise InputError(
                    f"cannot write rejected rows to {self.path}: {exc.strerror}"
                ) from exc
            self._handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            extra = list(self.header) if self.header is not None else ["record"]
            self._writer.writerow([*REJECTS_COLUMNS, *extra])
        self._writer.writerow(
            [reject.row, reject.column, reject.reason, *(cells or [])[self.drop :]]
        )

    def commit(self) -> Path:
        if self._handle is not None:
            self._handle.close()
            try:
                os.chmod(self._temp, 0o644)
                self._move_into_place()
            except OSError as exc:  # checked before the import; changed since
                reason = exc.strerror or str(exc)
                raise InputError(
                    f"the import was saved, but its rejected rows could not be "
                    f"moved to {self.path} ({reason}); they are in {self._temp}"
                ) from exc
            self._handle = self._writer = self._temp = None
        return self.path

    def _move_into_place(self) -> None:
        # Checked again: what is there may have changed during the import.
        what = _not_a_regular_file(self.path)
        if what:
            raise OSError(f"it is {what} now")
        if self.replace:
            os.replace(self._temp, self.path)
            return
        # A hard link fails where anything exists, so a file that appeared
        # meanwhile is never replaced.
        try:
            os.link(self._temp, self.path)
        except FileExistsError:
            raise OSError("a file of that name appeared during the import") from None
        except OSError:
            # Limitation: where hard links are not supported (some mounted
            # drives) a file that appears between this check and the rename
            # is replaced.
            if os.path.lexists(self.path):
                raise OSError(
                    "a file of that name appeared during the import"
                ) from None
            os.replace(self._temp, self.path)
            return
        os.unlink(self._temp)

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._handle = self._writer = self._temp = None


def _unused_name(path: Path, batch_id: int) -> Path:
    """``path``, or when something is there already (an earlier import's
    rejects) the same name with the batch id: a default never replaces."""
    if not os.path.lexists(path):
        return path
    stem = path.name.removesuffix(".csv")
    tag = f"batch-{batch_id}"
    base = stem if tag in stem else f"{stem}-{tag}"
    candidate = path.with_name(f"{base}.csv")
    number = 2
    while os.path.lexists(candidate):
        candidate = path.with_name(f"{base}-{number}.csv")
        number += 1
    return candidate


def known_layout_names() -> list[str]:
    return list(LAYOUTS_BY_NAME)
