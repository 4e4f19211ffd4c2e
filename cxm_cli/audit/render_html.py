"""The audit as one self-contained HTML page: inline CSS and SVG, nothing fetched.

The page carries a Content-Security-Policy that forbids every network load,
so even a future template change cannot make it phone home unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from cxm_cli.audit.charts import bar_chart_svg
from cxm_cli.audit.fmt import duration, number, pct
from cxm_cli.audit.views import finding_people, period_label, sections

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "audit"
TEMPLATE_NAME = "report.html.j2"


def render_html(audit: dict[str, Any]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["pct"] = pct
    environment.filters["duration"] = duration
    environment.filters["number"] = number
    template = environment.get_template(TEMPLATE_NAME)
    return template.render(
        audit=audit,
        report=audit["report"],
        period=period_label(audit),
        findings=audit["findings"],
        sections=sections(audit),
        chart=bar_chart_svg,
        people=finding_people,
    )
