"""``cxm reviews report``: what asking for reviews has brought.

Requests sent and answered, ratings by month and platform (the private 1-5
answers as platform ``private``, public reviews by their platform), the
average rating's trend, public reviews gained after a request, and the time
from the job to the review. The same figures feed the terminal chart, the
JSON and the HTML page (inline SVG charts, no network resources).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from cxm_cli import clock as clocks

PRIVATE = "private"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
BAR_WIDTH = 28
PALETTE = ["#2458c6", "#1b998b", "#f4a259", "#8e6c8a", "#d1495b", "#5c946e"]


def _zone(workspace):
    try:
        return ZoneInfo(workspace.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _month(timestamp: str, zone) -> str:
    return clocks.parse(timestamp).astimezone(zone).strftime("%Y-%m")


def _average(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _days(start: str, end: str) -> float:
    delta = clocks.parse(end) - clocks.parse(start)
    return round(delta.total_seconds() / 86400, 1)


# Limitation: the report reads the period's requests and reviews into memory;
# fine for one business (thousands of rows), not for a whole agency at once.
def build_report(workspace, db, clock, *, since: str | None = None) -> dict[str, Any]:
    """Every figure of the dashboard, as plain data."""
    zone = _zone(workspace)
    since_iso = clocks.iso(clocks.parse(since)) if since else "0000"

    requests = list(
        db.query(
            "SELECT * FROM review_requests WHERE COALESCE(sent_at, created_at) >= ?",
            [since_iso],
        )
    )
    sent = [r for r in requests if r["status"] in ("sent", "answered", "sending")]
    rated = [r for r in sent if r["rating"] is not None]
    skipped = [r for r in requests if r["status"] == "skipped"]
    reviews = list(
        db.query(
            "SELECT * FROM reviews WHERE reviewed_at >= ? ORDER BY reviewed_at",
            [since_iso],
        )
    )
    feedback_count = db.execute(
        "SELECT COUNT(*) FROM review_feedback WHERE at >= ?", [since_iso]
    ).fetchone()[0]

    return {
        "generated_at": clocks.now_iso(clock),
        "business": workspace.business_name,
        "since": since,
        "requests": {
            "sent": len(sent),
            "by_channel": dict(Counter(r["channel"] for r in sent)),
            "skipped": len(skipped),
            "skip_reasons": dict(Counter(_reason_kind(r["reason"]) for r in skipped)),
            "cancelled_by_guard": sum(
                1 for r in requests if r["status"] == "cancelled"
            ),
            "scheduled": sum(1 for r in requests if r["status"] == "scheduled"),
            "failed": sum(1 for r in requests if r["status"] == "failed"),
        },
        "answers": {
            "rated": len(rated),
            "answer_rate": round(len(rated) / len(sent), 3) if sent else None,
            "average_rating": _average([r["rating"] for r in rated]),
            "low_ratings": sum(1 for r in rated if r["rating"] <= _low_max(workspace)),
            "feedback": feedback_count,
            "by_channel": dict(Counter(r["rated_via"] for r in rated)),
        },
        "ratings_by_month": _ratings_by_month(rated, reviews, zone),
        "trend": _trend(rated, reviews, zone),
        "public_reviews": _public(reviews),
        "time_to_review": _time_to_review(db, reviews),
    }


def _low_max(workspace) -> int:
    from cxm_cli.reviews.settings import ReviewSettings

    return ReviewSettings.of(workspace).low_rating_max


def _reason_kind(reason: str | None) -> str:
    """Group skip reasons for the summary (cool-down, cap, channel)."""
    text = (reason or "").lower()
    for kind in ("cool-down", "lifetime cap", "no usable channel", "quiet hours"):
        if kind in text:
            return kind
    return text.split(":")[0] or "other"


def _ratings_by_month(rated, reviews, zone) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rated:
        groups[(_month(row["rated_at"], zone), PRIVATE)].append(row["rating"])
    for row in reviews:
        bucket = groups[(_month(row["reviewed_at"], zone), row["platform"])]
        if row["rating"] is not None:
            bucket.append(row["rating"])
    counts: Counter = Counter()
    for row in reviews:
        counts[(_month(row["reviewed_at"], zone), row["platform"])] += 1
    for row in rated:
        counts[(_month(row["rated_at"], zone), PRIVATE)] += 1
    return [
        {
            "month": month,
            "platform": platform,
            "count": counts[(month, platform)],
            "average": _average(groups[(month, platform)]),
        }
        for month, platform in sorted(groups)
    ]


def _trend(rated, reviews, zone) -> list[dict[str, Any]]:
    months = sorted(
        {_month(r["rated_at"], zone) for r in rated}
        | {_month(r["reviewed_at"], zone) for r in reviews}
    )
    trend = []
    running: list[int] = []
    for month in months:
        public = [
            r["rating"]
            for r in reviews
            if r["rating"] is not None and _month(r["reviewed_at"], zone) == month
        ]
        private = [r["rating"] for r in rated if _month(r["rated_at"], zone) == month]
        running.extend(public)
        trend.append(
            {
                "month": month,
                "public_count": sum(
                    1 for r in reviews if _month(r["reviewed_at"], zone) == month
                ),
                "public_average": _average(public),
                "cumulative_public_average": _average(running),
                "private_count": len(private),
                "private_average": _average(private),
            }
        )
    return trend


def _public(reviews) -> dict[str, Any]:
    after = [r for r in reviews if r["request_id"] is not None]
    return {
        "total": len(reviews),
        "matched_to_contacts": sum(1 for r in reviews if r["contact_id"] is not None),
        "after_requests": len(after),
        "share_after_requests": round(len(after) / len(reviews), 3)
        if reviews
        else None,
        "average_rating": _average(
            [r["rating"] for r in reviews if r["rating"] is not None]
        ),
        "by_platform": dict(Counter(r["platform"] for r in reviews)),
    }


def _time_to_review(db, reviews) -> dict[str, Any]:
    from_job: list[float] = []
    from_request: list[float] = []
    for review in reviews:
        if review["request_id"] is None:
            continue
        request = db.execute(
            "SELECT sent_at, trigger_at FROM review_requests WHERE id = ?",
            [review["request_id"]],
        ).fetchone()
        if request is None or request[0] is None:
            continue
        sent_at, job_at = request
        from_request.append(_days(sent_at, review["reviewed_at"]))
        from_job.append(_days(job_at or sent_at, review["reviewed_at"]))
    return {
        "count": len(from_job),
        "median_days_from_job": statistics.median(from_job) if from_job else None,
        "average_days_from_job": round(statistics.fmean(from_job), 1)
        if from_job
        else None,
        "median_days_from_request": statistics.median(from_request)
        if from_request
        else None,
    }


# ---------------------------------------------------------------- terminal


def terminal_chart(report: dict[str, Any]) -> str:
    """The dashboard as text: headline figures and a bar per month."""
    requests = report["requests"]
    answers = report["answers"]
    public = report["public_reviews"]
    timing = report["time_to_review"]
    lines = [
        f"Reviews for {report['business']}",
        "",
        f"Requests sent       {requests['sent']}" + _by(requests["by_channel"]),
        f"Not asked (why)     {requests['skipped']}" + _by(requests["skip_reasons"]),
        f"Cancelled by guard  {requests['cancelled_by_guard']}",
        f"Answered            {answers['rated']}"
        + (
            f" ({answers['answer_rate']:.0%})"
            if answers["answer_rate"] is not None
            else ""
        ),
        f"Average answer      {_stars(answers['average_rating'])}",
        f"Private feedback    {answers['feedback']}",
        f"Public reviews      {public['total']}"
        + f" ({public['after_requests']} after a request)",
        f"Public average      {_stars(public['average_rating'])}",
        "Job to review       "
        + (
            f"median {timing['median_days_from_job']} days"
            if timing["median_days_from_job"] is not None
            else "-"
        ),
        "",
        "Per month: # public review, + private answer; average public rating",
    ]
    trend = report["trend"]
    if not trend:
        lines.append("  (nothing yet)")
    widest = max([t["public_count"] + t["private_count"] for t in trend] or [1])
    scale = min(1.0, BAR_WIDTH / widest) if widest else 1.0
    for item in trend:
        public_bar = "#" * max(
            1 if item["public_count"] else 0, round(item["public_count"] * scale)
        )
        private_bar = "+" * max(
            1 if item["private_count"] else 0, round(item["private_count"] * scale)
        )
        bar = (public_bar + private_bar).ljust(BAR_WIDTH)
        average = item["public_average"]
        shown = f"{average:.1f}" if average is not None else "  - "
        lines.append(
            f"  {item['month']}  {bar}  {item['public_count']:>3} public "
            f"{item['private_count']:>3} private  avg {shown}"
        )
    return "\n".join(lines) + "\n"


def _by(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")"


def _stars(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} / 5"


# ---------------------------------------------------------------- HTML


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: inline CSS and SVG, nothing fetched."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("reviews/report.html")
    return template.render(
        report=report,
        monthly=_monthly_chart(report),
        trend_chart=_trend_chart(report),
    )


def _monthly_chart(report: dict[str, Any]) -> dict[str, Any]:
    """Stacked bars: reviews and answers per month, one colour per platform."""
    months = sorted({row["month"] for row in report["ratings_by_month"]})
    platforms = sorted({row["platform"] for row in report["ratings_by_month"]})
    colours = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(platforms)}
    counts = {
        (row["month"], row["platform"]): row["count"]
        for row in report["ratings_by_month"]
    }
    totals = [sum(counts.get((m, p), 0) for p in platforms) for m in months]
    top = max(totals or [1]) or 1
    width, height, left, bottom = 640, 240, 40, 30
    plot_height = height - bottom - 10
    step = (width - left - 10) / max(len(months), 1)
    bars = []
    labels = []
    for index, month in enumerate(months):
        x = left + index * step + step * 0.15
        y = height - bottom
        for platform in platforms:
            count = counts.get((month, platform), 0)
            if not count:
                continue
            bar_height = plot_height * count / top
            y -= bar_height
            bars.append(
                {
                    "x": round(x, 1),
                    "y": round(y, 1),
                    "width": round(step * 0.7, 1),
                    "height": round(bar_height, 1),
                    "colour": colours[platform],
                    "title": f"{month} {platform}: {count}",
                }
            )
        labels.append({"x": round(x + step * 0.35, 1), "text": month})
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "labels": labels,
        "label_y": height - 10,
        "axis_y": height - bottom,
        "left": left,
        "top": top,
        "legend": [{"name": p, "colour": colours[p]} for p in platforms],
    }


def _trend_chart(report: dict[str, Any]) -> dict[str, Any]:
    """Lines: public average per month and the running public average (1-5)."""
    trend = report["trend"]
    width, height, left, bottom = 640, 220, 40, 30
    plot_height = height - bottom - 10
    step = (width - left - 50) / max(len(trend) - 1, 1)

    def y_of(value: float) -> float:
        return round(height - bottom - plot_height * (value - 1) / 4, 1)

    series = {}
    for key in ("public_average", "cumulative_public_average", "private_average"):
        points = [
            (round(left + i * step, 1), y_of(item[key]))
            for i, item in enumerate(trend)
            if item[key] is not None
        ]
        series[key] = {
            "points": " ".join(f"{x},{y}" for x, y in points),
            "dots": points,
        }
    return {
        "width": width,
        "height": height,
        "left": left,
        "axis_y": height - bottom,
        "label_y": height - 10,
        "grid": [{"value": v, "y": y_of(v)} for v in (1, 2, 3, 4, 5)],
        "labels": [
            {"x": round(left + i * step, 1), "text": item["month"]}
            for i, item in enumerate(trend)
        ],
        "series": series,
    }
