"""The pipeline board, the stale list and the value reports.

Everything here reads ``contact_stages`` (where people are now) and the
``invoice.paid`` events (what they have paid); nothing replays the timeline,
so a board of 10,000 contacts is a handful of indexed queries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cxm_cli import clock as clocks
from cxm_cli.errors import InputError
from cxm_cli.pipelines import Pipeline, pipeline_config
from cxm_cli.segments import CONTACT_NAME_SQL

# Narrowest readable column: a name, a value and an age side by side.
CARD_WIDTH = 24

VALUE_GROUPINGS = ("stage", "source", "contact")

PAID_BY_CONTACT_SQL = """
    SELECT contact_id, SUM(CAST(json_extract(data, '$.amount') AS REAL)) AS paid
    FROM events
    WHERE type = 'invoice.paid' AND contact_id IS NOT NULL
    GROUP BY contact_id
"""


@dataclass
class Card:
    contact_id: int
    name: str
    value: float | None
    entered_at: str
    days_in_stage: int
    stale: bool


@dataclass
class Column:
    stage: str
    kind: str
    count: int
    total_value: float
    stale_count: int
    stale_after_days: int | None
    cards: list[Card] = field(default_factory=list)

    @property
    def hidden(self) -> int:
        return self.count - len(self.cards)


@dataclass
class Board:
    pipeline: str
    at: str
    columns: list[Column]

    @property
    def count(self) -> int:
        return sum(column.count for column in self.columns)

    @property
    def total_value(self) -> float:
        return sum(column.total_value for column in self.columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "at": self.at,
            "count": self.count,
            "total_value": self.total_value,
            "stages": [
                {**asdict(column), "hidden": column.hidden} for column in self.columns
            ],
        }


def _stale_cutoff(pipeline: Pipeline, stage_name: str, now, days: int | None):
    """Days after which a contact in the stage is stale, and that cutoff time."""
    stage = pipeline.find_stage(stage_name)
    if stage is not None and stage.is_closed:
        return None, None
    if days is None:
        days = pipeline.stale_days_for(stage) if stage else pipeline.stale_after_days
    return days, clocks.iso(now - timedelta(days=days))


def build_board(
    db, workspace, clock, *, pipeline: str | None = None, limit: int | None = 8
) -> Board:
    """Stages in order, each with its count, value and longest-waiting contacts.

    ``limit`` caps the cards per stage (oldest in the stage first, so the stale
    ones show); ``None`` lists everyone.
    """
    target = pipeline_config(workspace).pipeline(pipeline)
    now = clock.now()

    stored = [
        row["stage"]
        for row in db.query(
            "SELECT DISTINCT stage FROM contact_stages WHERE pipeline = ?",
            [target.name],
        )
    ]
    # Stages removed from cxm.toml still hold people: show them, last.
    configured = [stage.name for stage in target.stages]
    stage_names = configured + sorted(set(stored) - set(configured))

    columns = []
    for stage_name in stage_names:
        stage = target.find_stage(stage_name)
        threshold, cutoff = _stale_cutoff(target, stage_name, now, None)
        summary = next(
            db.query(
                """
                SELECT COUNT(*) AS count, COALESCE(SUM(value), 0) AS total,
                       COALESCE(SUM(entered_at <= ?), 0) AS stale
                FROM contact_stages WHERE pipeline = ? AND stage = ?
                """,
                [cutoff or "", target.name, stage_name],
            )
        )
        cards_sql = f"""
            SELECT s.contact_id, {CONTACT_NAME_SQL} AS name, s.value, s.entered_at
            FROM contact_stages s JOIN contacts c ON c.id = s.contact_id
            WHERE s.pipeline = ? AND s.stage = ?
            ORDER BY s.entered_at, s.contact_id
            {"LIMIT ?" if limit is not None else ""}
        """
        params: list[Any] = [target.name, stage_name]
        if limit is not None:
            params.append(limit)
        cards = [
            Card(
                contact_id=row["contact_id"],
                name=row["name"],
                value=row["value"],
                entered_at=row["entered_at"],
                days_in_stage=_days_since(now, row["entered_at"]),
                stale=cutoff is not None and row["entered_at"] <= cutoff,
            )
            for row in db.query(cards_sql, params)
        ]
        columns.append(
            Column(
                stage=stage_name,
                kind=stage.kind if stage else "removed",
                count=summary["count"],
                total_value=summary["total"],
                stale_count=summary["stale"],
                stale_after_days=threshold,
                cards=cards,
            )
        )
    return Board(target.name, clocks.iso(now), columns)


def _days_since(now, stamp: str) -> int:
    return max(0, (now - clocks.parse(stamp)).days)


# --- drawing ---------------------------------------------------------------------


def format_value(value: float | None, *, compact: bool = False) -> str:
    if value is None:
        return ""
    if compact and value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if compact and value >= 10_000:
        return f"{value / 1000:.0f}k"
    if compact and value >= 1_000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _column_panel(column: Column, width: int) -> Panel:
    body = Table.grid(padding=(0, 1), expand=True)
    body.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    body.add_column(justify="right", no_wrap=True)
    body.add_column(justify="right", no_wrap=True, min_width=4)

    for card in column.cards:
        age = Text(f"{card.days_in_stage}d")
        if card.stale:
            age = Text(f"{card.days_in_stage}d!", style="bold red")
        body.add_row(card.name, format_value(card.value, compact=True), age)
    if column.hidden:
        body.add_row(Text(f"+{column.hidden:,} more", style="dim"), "", "")
    if not column.count:
        body.add_row(Text("(empty)", style="dim"), "", "")

    summary = f"{column.count:,}"
    if column.total_value:
        summary += f" · {format_value(column.total_value, compact=True)}"
    if column.stale_count:
        summary += f" · {column.stale_count:,}!"
    style = {"won": "green", "lost": "red", "removed": "yellow"}.get(
        column.kind, "cyan"
    )
    return Panel(
        body,
        title=Text(column.stage, style=f"bold {style}"),
        subtitle=Text(summary),
        width=width,
        border_style=style,
        padding=(0, 1),
    )


def render_board(board: Board, width: int) -> Group:
    """Stages side by side, wrapping into rows so each stays readable.

    On an 80-column terminal three stages share a row; a wide terminal shows
    the whole pipeline in one row.
    """
    per_row = max(1, min(len(board.columns), width // CARD_WIDTH))
    panel_width = max(CARD_WIDTH - 2, width // per_row)
    rows = []
    for start in range(0, len(board.columns), per_row):
        row = Table.grid(padding=0)
        chunk = board.columns[start : start + per_row]
        for _ in chunk:
            row.add_column(width=panel_width, no_wrap=True)
        row.add_row(*[_column_panel(column, panel_width) for column in chunk])
        rows.append(row)

    total = f"{board.count:,} contacts"
    if board.total_value:
        total += f", deal value {format_value(board.total_value)}"
    heading = Text.assemble(
        (f"pipeline {board.pipeline}", "bold"), f"  {total}", style=None
    )
    legend = Text("! stale: in the stage longer than its limit", style="dim")
    return Group(heading, *rows, legend)


# --- stale list and values -------------------------------------------------------


def stale_contacts(
    db, workspace, clock, *, days: int | None = None, pipeline: str | None = None
) -> list[dict[str, Any]]:
    """Contacts in an open stage longer than ``days`` (default: its own limit)."""
    if days is not None and days < 0:
        raise InputError("--days must be 0 or more")
    target = pipeline_config(workspace).pipeline(pipeline)
    now = clock.now()

    rows: list[dict[str, Any]] = []
    stored = [
        r["stage"]
        for r in db.query(
            "SELECT DISTINCT stage FROM contact_stages WHERE pipeline = ?",
            [target.name],
        )
    ]
    for stage_name in stored:
        threshold, cutoff = _stale_cutoff(target, stage_name, now, days)
        if cutoff is None:
            continue
        sql = f"""
            SELECT s.contact_id, {CONTACT_NAME_SQL} AS name, s.stage, s.entered_at,
                   s.value
            FROM contact_stages s JOIN contacts c ON c.id = s.contact_id
            WHERE s.pipeline = ? AND s.stage = ? AND s.entered_at <= ?
        """
        for row in db.query(sql, [target.name, stage_name, cutoff]):
            row["pipeline"] = target.name
            row["days_in_stage"] = _days_since(now, row["entered_at"])
            row["stale_after_days"] = threshold
            rows.append(row)
    rows.sort(key=lambda row: (row["entered_at"], row["contact_id"]))
    return rows


def values_report(
    db,
    workspace,
    *,
    by: str = "stage",
    pipeline: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Deal value (from the pipeline) and lifetime value (paid invoices).

    ``by`` is ``stage`` (in pipeline order, contacts outside it last),
    ``source`` (the import or form a contact came from) or ``contact``.
    """
    if by not in VALUE_GROUPINGS:
        raise InputError(
            f"--by must be one of {', '.join(VALUE_GROUPINGS)}, not {by!r}"
        )
    target = pipeline_config(workspace).pipeline(pipeline)

    if by == "contact":
        sql = f"""
            WITH paid AS ({PAID_BY_CONTACT_SQL})
            SELECT c.id AS contact_id, {CONTACT_NAME_SQL} AS name, c.source, s.stage,
                   s.value AS deal_value, COALESCE(p.paid, 0) AS lifetime_value
            FROM contacts c
            LEFT JOIN contact_stages s ON s.contact_id = c.id AND s.pipeline = ?
            LEFT JOIN paid p ON p.contact_id = c.id
            ORDER BY lifetime_value DESC, deal_value DESC, c.id
            {"LIMIT ?" if limit else ""}
        """
        params: list[Any] = [target.name] + ([limit] if limit else [])
        return list(db.query(sql, params))

    group = "s.stage" if by == "stage" else "COALESCE(NULLIF(c.source, ''), '')"
    sql = f"""
        WITH paid AS ({PAID_BY_CONTACT_SQL})
        SELECT {group} AS {by}, COUNT(*) AS contacts,
               COALESCE(SUM(s.value), 0) AS deal_value,
               COALESCE(SUM(p.paid), 0) AS lifetime_value,
               COUNT(p.paid) AS paying_contacts
        FROM contacts c
        LEFT JOIN contact_stages s ON s.contact_id = c.id AND s.pipeline = ?
        LEFT JOIN paid p ON p.contact_id = c.id
        GROUP BY {group}
    """
    rows = list(db.query(sql, [target.name]))
    for row in rows:
        count = row["contacts"]
        row["average_lifetime_value"] = round(row["lifetime_value"] / count, 2)

    if by == "stage":
        order = {stage.name: stage.position for stage in target.stages}
        rows.sort(key=lambda r: (r["stage"] is None, order.get(r["stage"], 999)))
    else:
        rows.sort(key=lambda r: (-r["lifetime_value"], r["source"]))
    if limit:
        rows = rows[:limit]
    return rows


def contact_values(db, contact_id: int) -> dict[str, Any]:
    """A contact's deal value in each pipeline and lifetime value."""
    deals = {
        row["pipeline"]: row["value"]
        for row in db.query(
            "SELECT pipeline, value FROM contact_stages WHERE contact_id = ?",
            [contact_id],
        )
    }
    paid = next(
        db.query(
            "SELECT COALESCE(SUM(CAST(json_extract(data, '$.amount') AS REAL)), 0)"
            " AS paid FROM events WHERE contact_id = ? AND type = 'invoice.paid'",
            [contact_id],
        )
    )["paid"]
    return {"contact_id": contact_id, "deal_values": deals, "lifetime_value": paid}
