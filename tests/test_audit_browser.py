"""The HTML audit in a real headless Chromium: no errors, no network, charts drawn."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_audit_helpers import SINCE, UNTIL, build_known_history

SCREENSHOT = Path("/tmp/audit-screenshot.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]

# For every chart: its key, how many bars it has, and how many are longer than
# nothing, read from the drawn SVG itself.
CHART_STATE = """
() => Array.from(document.querySelectorAll("svg.chart")).map(svg => {
  const bars = Array.from(svg.querySelectorAll("rect.bar"));
  const box = svg.getBoundingClientRect();
  return {
    key: svg.dataset.chart,
    bars: bars.length,
    drawn: bars.filter(bar => bar.getBBox().width > 0).length,
    labels: svg.querySelectorAll("text.label").length,
    width: box.width,
    height: box.height,
  };
})
"""


def test_html_report_in_headless_chromium(cli, db, clock, tmp_path):
    from playwright.sync_api import sync_playwright

    build_known_history(db, clock)
    report = tmp_path / "audit.html"
    result = cli("audit", "--since", SINCE, "--until", UNTIL, "--out", str(report))
    assert result.exit_code == 0, result.stderr

    problems: list[str] = []
    outside: list[str] = []

    def on_request(request):
        url = urlparse(request.url)
        if url.scheme not in ("file", "data", "about") and url.hostname not in (
            "127.0.0.1",
            "localhost",
        ):
            outside.append(request.url)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", on_request)
            page.goto(report.as_uri(), wait_until="load")

            charts = page.evaluate(CHART_STATE)
            title = page.title()
            findings = page.locator("ol.findings li").count()
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            page.emulate_media(media="print")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth > window.innerWidth"
            )
            pdf = page.pdf(format="A4")
        finally:
            browser.close()

    assert problems == []
    assert outside == []
    assert title == "Customer experience audit: Bright Smile Dental"
    assert findings == 5
    assert [chart["key"] for chart in charts] == [
        "speed",
        "waiting",
        "touches",
        "silent",
        "funnel-lead journey",
        "funnel-intake",
        "appointments",
        "ratings",
        "revenue",
        "visits",
    ]
    for chart in charts:
        assert chart["bars"] >= 1, chart
        assert chart["drawn"] >= 1, chart
        assert chart["labels"] == chart["bars"], chart
        assert chart["width"] > 300 and chart["height"] > 20, chart
    assert not overflow
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert SCREENSHOT.stat().st_size > 10_000
