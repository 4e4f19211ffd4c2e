"""Where an audit's timeline comes from: a workspace, or a client's raw exports.

Raw exports are imported into a throw-away workspace (a temporary folder made
by ``init_workspace``) with the very importers a real workspace uses: leads
through :func:`cxm_cli.importing.import_file`, messages, appointments and
invoices through :mod:`cxm_cli.audit.activity_import`, public reviews through
the reviews part's importer when it is present. So an audit of the exports
equals the audit of a workspace that imported the same files.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxm_cli.audit.activity_import import import_activity
from cxm_cli.audit.options import make_options
from cxm_cli.audit.report import run_audit
from cxm_cli.errors import InputError
from cxm_cli.workspace import init_workspace, load_workspace

log = logging.getLogger(__name__)

REJECTS_LISTED = 50  # rejected lead rows carried into the report, per file


@dataclass
class ExportFiles:
    """The raw exports to audit, and how to read the leads files."""

    leads: list[Path] = field(default_factory=list)
    messages: list[Path] = field(default_factory=list)
    appointments: list[Path] = field(default_factory=list)
    invoices: list[Path] = field(default_factory=list)
    reviews: list[Path] = field(default_factory=list)
    # Passed to the lead importer as `cxm leads import` takes them.
    lead_format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    date_format: str | None = None
    mapping: list[str] = field(default_factory=list)
    source: str | None = None
    region: str | None = None

    def given(self) -> bool:
        return any(
            (self.leads, self.messages, self.appointments, self.invoices, self.reviews)
        )


@dataclass
class AuditSource:
    workspace: Any
    db: Any
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def exports_workspace(
    files: ExportFiles,
    *,
    clock,
    business_name: str = "the business",
    timezone: str = "UTC",
    keep: Path | None = None,
) -> Iterator[AuditSource]:
    """A workspace holding the imported exports; removed afterwards unless kept."""
    for path in (
        *files.leads,
        *files.messages,
        *files.appointments,
        *files.invoices,
        *files.reviews,
    ):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file")

    with tempfile.TemporaryDirectory(prefix="cxm-audit-") as scratch:
        root = Path(keep) if keep else Path(scratch) / "workspace"
        init_workspace(
            root,
            business_name=business_name,
            timezone=timezone,
            phone_region=(files.region or "US"),
        )
        workspace = load_workspace(root)
        db = workspace.open_db()
        try:
            source = AuditSource(workspace, db, {"kind": "exports", "files": []})
            _import_all(source, files, clock, scratch_dir=None if keep else scratch)
            if keep:
                source.info["workspace"] = str(workspace.root)
            yield source
        finally:
            db.close()


def _import_all(source: AuditSource, files: ExportFiles, clock, scratch_dir) -> None:
    from cxm_cli.importing import ImportOptions, import_file

    workspace, db, info = source.workspace, source.db, source.info
    for path in files.leads:
        options = ImportOptions(
            format=files.lead_format,
            encoding=files.encoding,
            delimiter=files.delimiter,
            region=files.region,
            date_format=files.date_format,
            mapping=list(files.mapping),
            source=files.source,
            # Only what the exports say: no pipeline moves or enrolments made
            # at import time (their timestamps would be the audit's own).
            run_hooks=False,
        )
        summary = import_file(workspace, db, str(path), clock=clock, options=options)
        entry = {
            "kind": "leads",
            "name": Path(path).name,
            "format": summary.format,
            **summary.counts(),
        }
        entry["rejects"] = _rejects(summary.rejects_path, scratch_dir, source)
        info["files"].append(entry)
        for note in summary.notes:
            source.warnings.append(f"{Path(path).name}: {note}")

    activity = [
        *(("messages", Path(p)) for p in files.messages),
        *(("appointments", Path(p)) for p in files.appointments),
        *(("invoices", Path(p)) for p in files.invoices),
    ]
    if activity:
        summary = import_activity(
            workspace, db, activity, clock=clock, region=files.region
        )
        for item in summary.files:
            info["files"].append({**item, "name": Path(item["name"]).name})
        info["activity"] = {
            "events": summary.recorded,
            "contacts_created": summary.contacts_created,
            "skipped": summary.skipped,
            "rejected": summary.rejected,
        }
        for reject in summary.rejected:
            source.warnings.append(
                f"{Path(reject['file']).name} row {reject['row']} "
                f"{reject['column']}: {reject['reason']} (row left out)"
            )

    for path in files.reviews:
        _import_reviews(source, Path(path), clock)


def _import_reviews(source: AuditSource, path: Path, clock) -> None:
    try:
        from cxm_cli.reviews.importing import import_reviews
    except ImportError:
        source.warnings.append(f"{path.name}: skipped, this cxm has no review importer")
        return
    summary = import_reviews(source.workspace, source.db, clock, str(path))
    source.info["files"].append(
        {
            "kind": "reviews",
            "name": path.name,
            "rows": summary.rows,
            "imported": summary.imported,
            "matched": summary.matched,
        }
    )


def _rejects(
    rejects_path: str | None, scratch_dir: str | None, source: AuditSource
) -> list[dict[str, Any]] | str | None:
    """Rejected lead rows: their reasons, if the file would vanish with the scratch.

    The importer writes rejects beside the export when it can; when the export
    sits in a read-only folder they land in the throw-away workspace, so their
    row numbers and reasons are carried into the report instead.
    """
    if not rejects_path:
        return None
    path = Path(rejects_path)
    scratch = Path(scratch_dir).resolve() if scratch_dir else None
    if scratch is None or not path.resolve().is_relative_to(scratch):
        source.warnings.append(f"rejected rows written to {path}")
        return str(path)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [
            {
                "row": row.get("row"),
                "column": row.get("column"),
                "reason": row.get("reason"),
            }
            for row in csv.DictReader(handle)
        ]
    for row in rows[:REJECTS_LISTED]:
        source.warnings.append(
            f"{path.name.replace('.rejects.csv', '')} row {row['row']}: "
            f"{row['reason']} (row left out)"
        )
    return rows


@dataclass
class AuditRequest:
    """What the user asked for on the command line (text, not yet parsed)."""

    since: str | None = None
    until: str | None = None
    timezone: str | None = None  # default: the workspace's
    lapsed_days: int | None = None
    reminder_hours: int | None = None
    top: int | None = None


def audit_workspace(workspace, db, request: AuditRequest, *, clock) -> dict[str, Any]:
    """The audit of a workspace's own timeline."""
    options = _options(request, clock, workspace.timezone)
    return run_audit(db, options, clock=clock, workspace=workspace)


def audit_exports(
    files: ExportFiles,
    request: AuditRequest,
    *,
    clock,
    business_name: str | None = None,
    keep: Path | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The audit of raw exports, and the warnings their import raised."""
    with exports_workspace(
        files,
        clock=clock,
        business_name=business_name or "the business",
        timezone=request.timezone or "UTC",
        keep=keep,
    ) as source:
        options = _options(request, clock, source.workspace.timezone)
        audit = run_audit(
            source.db,
            options,
            clock=clock,
            workspace=source.workspace,
            source=source.info,
        )
        return audit, source.warnings


def _options(request: AuditRequest, clock, default_zone: str):
    return make_options(
        clock=clock,
        since=request.since,
        until=request.until,
        timezone=request.timezone or default_zone,
        lapsed_days=request.lapsed_days,
        reminder_hours=request.reminder_hours,
        top=request.top,
    )
