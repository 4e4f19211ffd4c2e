"""The audit as a person reads it: sections of sentences, charts and tables.

The terminal, Markdown and HTML renderers all draw these same sections, so the
three outputs say the same thing in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.audit.fmt import duration, money, number, pct
from cxm_cli.audit.funnel import JOURNEY
from cxm_cli.audit.options import zone_named

LISTED_ROWS = 15  # people listed by name under a table before "and N more"


@dataclass
class Bar:
    label: str
    value: float
    text: str


@dataclass
class Chart:
    key: str
    title: str
    bars: list[Bar]
    maximum: float | None = None  # a fixed scale (5 stars); else the largest bar

    @property
    def empty(self) -> bool:
        return not any(bar.value for bar in self.bars)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    more: int = 0  # rows left out


@dataclass
class Section:
    key: str
    title: str
    summary: list[str]
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str | None = None


def period_label(audit: dict[str, Any]) -> str:
    report = audit["report"]
    zone = report["timezone"]
    since = _when(report["since"], zone) if report["since"] else "the beginning"
    return f"{since} to {_when(report['until'], zone)} ({zone})"


def finding_people(finding: dict[str, Any], limit: int = 12) -> str:
    names = [person["name"] for person in finding["contacts"][:limit]]
    more = len(finding["contacts"]) - len(names)
    text = ", ".join(names)
    return f"{text} and {number(more)} more" if more > 0 else text


def sections(audit: dict[str, Any]) -> list[Section]:
    zone = audit["report"]["timezone"]
    return [
        _speed(audit["speed_to_lead"]),
        _unanswered(audit["unanswered"], zone),
        _follow_up(audit["follow_up"]),
        *_funnel(audit["funnel"]),
        _appointments(audit["appointments"], audit["report"]["reminder_hours"]),
        _reviews(audit["reviews"]),
        _attribution(audit["attribution"]),
        _retention(audit["retention"], audit["report"]["lapsed_days"], zone),
    ]


def _breakdown(title: str, result: dict[str, Any], columns) -> list[Table]:
    """Tables of one measure by source and by channel: [(header, render)]."""
    headers = [header for header, _ in columns]
    tables = []
    for key, label in (("by_source", "source"), ("by_channel", "channel")):
        groups = result.get(key) or []
        if not groups:
            continue
        rows = [[str(g[label])] + [render(g) for _, render in columns] for g in groups]
        rows.append(["all"] + [render(result["overall"]) for _, render in columns])
        tables.append(Table(f"{title} by {label}", [label.title(), *headers], rows))
    return tables


def _count_bars(buckets: list[dict[str, Any]]) -> list[Bar]:
    return [Bar(b["label"], b["count"], number(b["count"])) for b in buckets]


def _touch_bars(rows: list[dict[str, Any]]) -> list[Bar]:
    """Leads by number of touches (``touches`` is a label: "1", "2", "4+")."""
    return [
        Bar(
            f"{r['touches']} touch{'es' if r['touches'] != '1' else ''}",
            r["leads"],
            number(r["leads"]),
        )
        for r in rows
    ]


def _listed(title: str, headers: list[str], rows: list, render) -> Table:
    """The people behind a measure, by name: the first LISTED_ROWS, then a count."""
    return Table(
        title,
        headers,
        [render(r) for r in rows[:LISTED_ROWS]],
        more=max(0, len(rows) - LISTED_ROWS),
    )


def _speed(speed: dict[str, Any]) -> Section:
    o = speed["overall"]
    if not o["leads"]:
        summary = ["No new leads came in during this period."]
    else:
        summary = [
            f"{number(o['leads'])} new leads. The median lead got a first reply in "
            f"{duration(o['median_seconds'])}; 90% of answered leads within "
            f"{duration(o['p90_seconds'])}.",
            f"{pct(o['within_5_min_share'])} were answered within 5 minutes, "
            f"{pct(o['within_1_hour_share'])} within an hour, and "
            f"{pct(o['never_share'])} ({o['never']}) never.",
        ]
        if o.get("not_yet"):
            summary.append(
                f"{number(o['not_yet'])} arrived in the last hour before the "
                "audit's end and are not answered yet; they count as neither."
            )
    columns = [
        ("Leads", lambda g: number(g["leads"])),
        ("Median", lambda g: duration(g["median_seconds"])),
        ("90th pct", lambda g: duration(g["p90_seconds"])),
        ("Within 5 min", lambda g: pct(g["within_5_min_share"])),
        ("Within 1 hour", lambda g: pct(g["within_1_hour_share"])),
        ("Never", lambda g: f"{g['never']} ({pct(g['never_share'])})"),
    ]
    chart = Chart(
        "speed",
        "Time to first reply",
        _count_bars(speed["buckets"]),
    )
    return Section(
        "speed_to_lead",
        "Speed to lead",
        summary,
        [chart],
        _breakdown("Speed to lead", speed, columns),
        note="From a lead's first inbound moment (form, lead record or message) to "
        "the first outbound message, automated or not.",
    )


def _unanswered(unanswered: dict[str, Any], zone: str) -> Section:
    o = unanswered["overall"]
    if not o["conversations"]:
        summary = ["Every conversation in the period has had a reply."]
    else:
        summary = [
            f"{number(o['conversations'])} conversations end with the customer's "
            f"message and no reply; the median has waited "
            f"{duration(o['median_wait_seconds'])}, the longest "
            f"{duration(o['longest_wait_seconds'])}."
        ]
    chart = Chart(
        "waiting",
        "How long they have waited",
        _count_bars(unanswered["buckets"]),
    )
    rows = unanswered["conversations"]
    listed = _listed(
        "Waiting for a reply",
        ["Contact", "Channel", "Last message", "Waiting"],
        rows,
        lambda r: [
            r["name"],
            str(r["channel"]),
            _when(r["last_inbound_at"], zone),
            duration(r["wait_seconds"]),
        ],
    )
    columns = [
        ("Waiting", lambda g: number(g["conversations"])),
        ("Median wait", lambda g: duration(g["median_wait_seconds"])),
        ("Longest", lambda g: duration(g["longest_wait_seconds"])),
    ]
    tables = ([listed] if rows else []) + _breakdown("Unanswered", unanswered, columns)
    return Section(
        "unanswered",
        "Unanswered conversations",
        summary,
        [chart],
        tables,
        note="The channel is that of the customer's last message.",
    )


def _follow_up(follow: dict[str, Any]) -> Section:
    o = follow["overall"]
    if not o["contacted"]:
        summary = ["No lead of the period was contacted."]
    else:
        summary = [
            f"{number(o['contacted'])} of {number(o['leads'])} leads were contacted; "
            f"{pct(o['reply_share'])} responded, after a median of "
            f"{_touches(o['median_touches_to_reply'])}.",
            f"{pct(o['dropped_after_one_touch_share'])} of contacted leads "
            f"({o['dropped_after_one_touch']}) got a single message and never "
            "responded.",
        ]
    chart = Chart(
        "touches",
        "Touches before the lead responded",
        _touch_bars(follow["replied_at_touch"]),
    )
    silent = Chart(
        "silent",
        "Touches given to leads who never responded",
        _touch_bars(follow["silent_after_touches"]),
    )
    columns = [
        ("Leads", lambda g: number(g["leads"])),
        ("Contacted", lambda g: number(g["contacted"])),
        ("Responded", lambda g: pct(g["reply_share"])),
        ("Median touches", lambda g: number(g["median_touches_to_reply"])),
        (
            "Dropped after 1",
            lambda g: (
                f"{g['dropped_after_one_touch']} "
                f"({pct(g['dropped_after_one_touch_share'])})"
            ),
        ),
    ]
    return Section(
        "follow_up",
        "Follow-up depth",
        summary,
        [chart, silent],
        _breakdown("Follow-up", follow, columns),
        note="A response is an inbound message or a booking after the first touch.",
    )


def _touches(count: float | None) -> str:
    if count is None:
        return "n/a touches"
    return f"{number(count)} touch{'' if count == 1 else 'es'}"


def _funnel(funnel: dict[str, Any]) -> list[Section]:
    if not funnel["pipelines"]:
        return [
            Section(
                "funnel",
                "Funnel",
                ["No pipeline moves (stage.changed) in this period."],
            )
        ]
    found = []
    for pipeline in funnel["pipelines"]:
        name = pipeline["pipeline"]
        leak = pipeline["biggest_leak"]
        if name == JOURNEY:
            summary = [
                f"The {number(pipeline['entered'])} leads of the period, followed "
                "from their first contact to payment by what happened to them."
            ]
        else:
            summary = [
                f"{number(pipeline['entered'])} people entered the {name} "
                "pipeline in the period."
            ]
        if leak:
            summary.append(
                f"Most people who never became customers stopped at "
                f'"{leak["stage"]}": {leak["stopped"]} of {leak["reached"]} who '
                f"reached it ({pct(leak['share'])})."
            )
        forward = [s for s in pipeline["stages"] if s["kind"] != "lost"]
        chart = Chart(
            f"funnel-{name}",
            f"Reached each stage ({name})",
            [Bar(s["stage"], s["reached"], number(s["reached"])) for s in forward],
        )
        stages = Table(
            f"Stages of {name}",
            ["Stage", "Reached", "On to next", "Stopped here", "Median time in stage"],
            [
                [
                    s["stage"] + (f" ({s['kind']})" if s["kind"] != "open" else ""),
                    number(s["reached"]),
                    pct(s["conversion_to_next"])
                    if s["conversion_to_next"] is not None
                    else "",
                    "" if s["stopped_here"] is None else number(s["stopped_here"]),
                    duration(s["median_seconds_in_stage"]) if s["stays"] else "",
                ]
                for s in pipeline["stages"]
            ],
        )
        columns = [
            ("Entered", lambda g: number(g["entered"])),
            ("Won", lambda g: f"{g['won']} ({pct(g['won_share'])})"),
            ("Lost", lambda g: number(g["lost"])),
            ("Customers", lambda g: f"{g['customers']} ({pct(g['customer_share'])})"),
        ]
        found.append(
            Section(
                f"funnel-{name}",
                f"Funnel: {name}",
                summary,
                [chart],
                [stages, *_breakdown(f"Funnel {name}", pipeline, columns)],
            )
        )
    return found


def _appointments(appointments: dict[str, Any], hours: int) -> Section:
    o = appointments["overall"]
    summary = [
        f"{number(o['booked'])} appointments booked in the period; "
        f"{number(o['completed'])} completed, {number(o['no_show'])} no-show"
        f"{'' if o['no_show'] == 1 else 's'}, "
        f"{number(o['cancelled'])} cancelled.",
    ]
    if o["due"]:
        summary.append(
            f"No-show rate {pct(o['no_show_rate'])}. {pct(o['reminder_coverage'])} of "
            f"appointments that fell due had a reminder in the {hours} hours before."
        )
    chart = Chart(
        "appointments",
        "Appointments in the period",
        [
            Bar("booked", o["booked"], number(o["booked"])),
            Bar("completed", o["completed"], number(o["completed"])),
            Bar("no-show", o["no_show"], number(o["no_show"])),
            Bar("cancelled", o["cancelled"], number(o["cancelled"])),
        ],
    )
    columns = [
        ("Booked", lambda g: number(g["booked"])),
        ("Completed", lambda g: number(g["completed"])),
        ("No-show", lambda g: f"{g['no_show']} ({pct(g['no_show_rate'])})"),
        ("Cancelled", lambda g: number(g["cancelled"])),
        ("Reminded", lambda g: pct(g["reminder_coverage"])),
    ]
    return Section(
        "appointments",
        "Appointments",
        summary,
        [chart],
        _breakdown("Appointments", appointments, columns),
    )


def _reviews(reviews: dict[str, Any]) -> Section:
    o = reviews["overall"]
    jobs = "completed jobs" if o["jobs_from"] == "appointments" else "paid invoices"
    summary = [
        f"{number(o['requests'])} review requests for {number(o['completed_jobs'])} "
        f"{jobs} ({number(o['requests_per_job'])} per job); "
        f"{pct(o['answer_rate'])} were answered.",
        f"{number(o['public_reviews'])} public reviews gained, average "
        f"{number(o['public_average_rating'])} stars; "
        f"{number(o['public_reviews_after_request'])} came after a request.",
    ]
    chart = Chart(
        "ratings",
        "Average rating by month (answers and public reviews)",
        [
            Bar(m["month"], _month_average(m), number(_month_average(m)))
            for m in reviews["by_month"]
        ],
        maximum=5,
    )
    platforms = Table(
        "Public reviews by platform",
        ["Platform", "Reviews", "Average"],
        [
            [p["platform"], number(p["reviews"]), number(p["average_rating"])]
            for p in reviews["by_platform"]
        ],
    )
    columns = [
        ("Requests", lambda g: number(g["requests"])),
        ("Answered", lambda g: f"{g['answered']} ({pct(g['answer_rate'])})"),
        ("Jobs", lambda g: number(g["completed_jobs"])),
        ("Per job", lambda g: number(g["requests_per_job"])),
    ]
    tables = _breakdown("Reviews", reviews, columns)
    if reviews["by_platform"]:
        tables.append(platforms)
    return Section(
        "reviews",
        "Reviews",
        summary,
        [chart],
        tables,
        note="By channel: the channel the request went out on.",
    )


def _month_average(month: dict[str, Any]) -> float:
    count = month["ratings"] + month["public_reviews"]
    if not count:
        return 0.0
    total = (month["average_rating"] or 0) * month["ratings"] + (
        month["public_average_rating"] or 0
    ) * month["public_reviews"]
    return round(total / count, 2)


def _attribution(attribution: dict[str, Any]) -> Section:
    o = attribution["overall"]
    summary = [
        f"{number(o['leads'])} leads, {pct(o['conversion'])} became customers; "
        f"revenue in the period {money(o['revenue'])}; lifetime value per paying "
        f"customer {money(o['lifetime_value'])}."
    ]
    chart = Chart(
        "revenue",
        "Revenue in the period by source",
        [
            Bar(str(g["source"]), max(g["revenue"], 0.0), money(g["revenue"]))
            for g in attribution["by_source"]
        ],
    )
    columns = [
        ("Leads", lambda g: number(g["leads"])),
        ("Booked", lambda g: number(g["booked"])),
        ("Customers", lambda g: f"{g['converted']} ({pct(g['conversion'])})"),
        ("Revenue", lambda g: money(g["revenue"])),
        ("Paying", lambda g: number(g["customers"])),
        ("Lifetime value", lambda g: money(g["lifetime_value"])),
    ]
    return Section(
        "attribution",
        "Attribution",
        summary,
        [chart],
        _breakdown("Attribution", attribution, columns),
        note="Customers: leads of the period who completed an "
        "appointment or paid. Revenue: net payments in the period.",
    )


def _retention(retention: dict[str, Any], lapsed_days: int, zone: str) -> Section:
    o = retention["overall"]
    summary = [
        f"{number(o['customers'])} customers; {pct(o['repeat_share'])} came back at "
        f"least once; {number(o['new_customers'])} were new in the period.",
        f"{number(o['lapsed_customers'])} ({pct(o['lapsed_share'])}) have not been "
        f"back in over {lapsed_days} days.",
    ]
    chart = Chart(
        "visits",
        "Customers by number of visits",
        [
            Bar(
                f"{v['visits']} visit{'s' if v['visits'] != '1' else ''}",
                v["customers"],
                number(v["customers"]),
            )
            for v in retention["visits"]
        ],
    )
    lapsed = retention["lapsed"]
    listed = _listed(
        "Lapsed customers",
        ["Contact", "Last visit", "Days since", "Visits"],
        lapsed,
        lambda r: [
            r["name"],
            _when(r["last_visit_at"], zone),
            number(r["days_since"]),
            number(r["visits"]),
        ],
    )
    columns = [
        ("Customers", lambda g: number(g["customers"])),
        ("Repeat", lambda g: f"{g['repeat_customers']} ({pct(g['repeat_share'])})"),
        ("New", lambda g: number(g["new_customers"])),
        ("Lapsed", lambda g: f"{g['lapsed_customers']} ({pct(g['lapsed_share'])})"),
    ]
    tables = _breakdown("Retention", retention, columns) + ([listed] if lapsed else [])
    return Section("retention", "Retention", summary, [chart], tables)


def _when(stored: str | None, zone: str) -> str:
    """A stored time as the business reads it, in its own time zone."""
    if not stored:
        return ""
    local = clocks.parse(stored).astimezone(zone_named(zone))
    return local.strftime("%Y-%m-%d %H:%M")
