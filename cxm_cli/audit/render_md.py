"""The audit as Markdown: for a consultant's notes, email, or a Git repository."""

from __future__ import annotations

from typing import Any

from cxm_cli.audit.charts import text_bars
from cxm_cli.audit.fmt import number
from cxm_cli.audit.views import Chart, Table, finding_people, period_label, sections


def render_markdown(audit: dict[str, Any]) -> str:
    report = audit["report"]
    business = report["business"] or "the business"
    lines = [
        f"# Customer experience audit: {business}",
        "",
        f"Period: {period_label(audit)}. Generated "
        f"{report['generated_at'][:16].replace('T', ' ')} UTC "
        f"from {_source_label(report['source'])}.",
        "",
        "## What to fix first",
        "",
    ]
    if not audit["findings"]:
        lines += ["Nothing stands out in this period.", ""]
    for finding in audit["findings"]:
        lines += [
            f"{finding['rank']}. **{_inline(finding['title'])}.** "
            f"{_inline(finding['action'])}",
            f"   People ({number(finding['affected'])}): "
            f"{_inline(finding_people(finding))}",
        ]
    lines.append("")

    for section in sections(audit):
        lines += [f"## {section.title}", ""]
        lines += [" ".join(section.summary), ""]
        for chart in section.charts:
            lines += _chart(chart)
        for table in section.tables:
            lines += _table(table)
        if section.note:
            lines += [f"_{_inline(section.note)}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _source_label(source: dict[str, Any]) -> str:
    if source.get("kind") == "exports":
        files = ", ".join(f["name"] for f in source.get("files", []))
        return f"raw exports ({files})"
    return "the workspace timeline"


def _chart(chart: Chart) -> list[str]:
    rows = text_bars(chart)
    width = max((len(label) for label, _, _ in rows), default=0)
    body = [f"{label.rjust(width)}  {bar} {text}" for label, bar, text in rows]
    return [f"**{chart.title}**", "", "```text", *body, "```", ""]


def _table(table: Table) -> list[str]:
    lines = [f"**{_inline(table.title)}**", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    if table.more:
        lines += ["", f"and {table.more} more (see `cxm audit --json`)"]
    return [*lines, ""]


def _cell(value: str) -> str:
    return _inline(value).replace("|", "\\|")


def _inline(text: str) -> str:
    return str(text).replace("\n", " ")
