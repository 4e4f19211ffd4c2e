"""The audit on a terminal: findings first, then each measure's bars and tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table as RichTable
from rich.text import Text

from cxm_cli.audit.charts import text_bars
from cxm_cli.audit.fmt import number
from cxm_cli.audit.views import Chart, Table, finding_people, period_label, sections


def print_audit(audit: dict[str, Any], console: Console) -> None:
    report = audit["report"]
    console.print(
        Text(
            f"Customer experience audit: {report['business'] or 'the business'}",
            style="bold",
        )
    )
    console.print(Text(f"Period: {period_label(audit)}", style="dim"))
    console.print()

    console.print(Rule("What to fix first", align="left"))
    if not audit["findings"]:
        console.print("Nothing stands out in this period.")
    for finding in audit["findings"]:
        console.print(Text(f"{finding['rank']}. {finding['title']}.", style="bold"))
        console.print(Text(f"   {finding['action']}"))
        console.print(
            Text(
                f"   People ({number(finding['affected'])}): "
                f"{finding_people(finding, 8)}",
                style="dim",
            )
        )
    console.print()

    for section in sections(audit):
        console.print(Rule(section.title, align="left"))
        for sentence in section.summary:
            console.print(sentence, highlight=False)
        for chart in section.charts:
            console.print(_chart(chart))
        for table in section.tables:
            console.print(_table(table))
        if section.note:
            console.print(Text(section.note, style="dim"))
        console.print()


def _chart(chart: Chart) -> RichTable:
    grid = RichTable(
        title=chart.title,
        title_justify="left",
        box=None,
        show_header=False,
        padding=(0, 1),
    )
    grid.add_column(justify="right")
    grid.add_column(style="blue")
    grid.add_column(style="dim")
    for label, bar, text in text_bars(chart, width=32):
        grid.add_row(label, bar, text)
    return grid


def _table(table: Table) -> RichTable:
    rich_table = RichTable(
        title=table.title,
        title_justify="left",
        caption=f"and {table.more} more" if table.more else None,
    )
    for index, header in enumerate(table.headers):
        rich_table.add_column(header, justify="left" if index == 0 else "right")
    for row in table.rows:
        rich_table.add_row(*row, style="bold" if row[0] == "all" else None)
    return rich_table
