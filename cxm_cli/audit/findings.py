"""The few things to fix first, ranked, each with its number and its people.

Every candidate finding comes from one measure and names the contacts behind
it, so a consultant can hand the list to the client and the client can act on
it. Candidates are ranked by the number of people affected, weighted by how
directly that leak costs the business (a conversation left waiting or an empty
chair costs more today than a review never asked for). At most two findings
come from one measure, so one bad number cannot crowd out the rest.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cxm_cli.audit.fmt import duration, number, pct, plural

# How much one affected person weighs, per kind of finding.
WEIGHTS = {
    "unanswered": 1.5,
    "no_shows": 1.3,
    "slow_leads": 1.2,
    "dropped_after_one_touch": 1.0,
    "funnel_leak": 1.0,
    "lapsed_customers": 0.8,
    "source_not_converting": 0.7,
    "jobs_not_asked_for_review": 0.6,
    "reminders_missing": 0.5,
}
MAX_PER_MEASURE = 2
# The lead journey and a pipeline often leak at the same place: one is enough.
MAX_FOR = {"funnel": 1}
MIN_GROUP = 3  # a source or channel with fewer leads says nothing yet


def rank_findings(
    audit: dict[str, Any], *, top: int, lapsed_days: int, reminder_hours: int
) -> list[dict[str, Any]]:
    candidates: list[dict[str, Any]] = []
    candidates += _slow_leads(audit["speed_to_lead"])
    candidates += _unanswered(audit["unanswered"])
    candidates += _dropped(audit["follow_up"])
    candidates += _funnel_leaks(audit["funnel"])
    candidates += _no_shows(audit["appointments"])
    candidates += _reminders(audit["appointments"], reminder_hours)
    candidates += _reviews(audit["reviews"])
    candidates += _lapsed(audit["retention"], lapsed_days)
    candidates += _sources_not_converting(audit["attribution"], audit["speed_to_lead"])

    for finding in candidates:
        finding["affected"] = len(finding["contact_ids"])
        finding["score"] = round(finding["affected"] * WEIGHTS[finding["kind"]], 2)
    candidates.sort(key=lambda f: (-f["score"], f["kind"], f["title"]))

    chosen: list[dict[str, Any]] = []
    per_measure: dict[str, int] = defaultdict(int)
    for finding in candidates:
        limit = MAX_FOR.get(finding["measure"], MAX_PER_MEASURE)
        if per_measure[finding["measure"]] >= limit:
            continue
        per_measure[finding["measure"]] += 1
        chosen.append(finding)
        if len(chosen) == top:
            break
    for rank, finding in enumerate(chosen, start=1):
        finding["rank"] = rank
    return chosen


def _finding(
    kind: str,
    measure: str,
    title: str,
    number: float | int | None,
    unit: str,
    contact_ids: list[int],
    action: str,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "measure": measure,
        "title": title,
        "number": number,
        "unit": unit,
        "action": action,
        "contact_ids": sorted(set(contact_ids)),
    }


def _slow_leads(speed: dict[str, Any]) -> list[dict[str, Any]]:
    groups = speed["by_source"]
    several = len(groups) > 1
    overall = speed["overall"]
    nobody_answered = bool(overall["leads"]) and not overall["answered"]
    found = []
    for group in groups if several else [{"source": None, **speed["overall"]}]:
        if group["leads"] < MIN_GROUP or (group["over_1_hour_share"] or 0) < 0.2:
            continue
        source = group["source"]
        ids = [
            row["contact_id"]
            for row in speed["leads"]
            if (source is None or row["source"] == source) and _waited_over_an_hour(row)
        ]
        who = f"{source} leads" if source else "leads"
        title = f"{pct(group['over_1_hour_share'])} of {who} waited over an hour"
        if nobody_answered:
            # Not one answer in the whole audit looks like missing message
            # history more than a business that never replies.
            title += (
                "; no answer to any lead is on record: if the team did answer, "
                "audit the message history too (--messages)"
            )
        elif group["never"]:
            never = group["never"]
            title += (
                f"; {number(never)} {'was' if never == 1 else 'were'} never answered"
            )
        if group.get("not_yet"):
            # Arrived within the hour before the audit's end: not slow (yet).
            title += f"; {number(group['not_yet'])} not answered yet"
        found.append(
            _finding(
                "slow_leads",
                "speed_to_lead",
                title,
                group["over_1_hour_share"],
                "share",
                ids,
                "Answer new leads within five minutes: an instant text or email "
                "on arrival, and a person calling back within the hour.",
            )
        )
    return found


def _waited_over_an_hour(row: dict[str, Any]) -> bool:
    waited = row["seconds"] if row["seconds"] is not None else row["waiting_seconds"]
    return waited is None or waited > 3600


def _unanswered(unanswered: dict[str, Any]) -> list[dict[str, Any]]:
    overall = unanswered["overall"]
    if not overall["conversations"]:
        return []
    count = overall["conversations"]
    title = (
        f"{plural(count, 'conversation')} {'is' if count == 1 else 'are'} waiting "
        f"for a reply; the longest for {duration(overall['longest_wait_seconds'])}"
    )
    ids = [row["contact_id"] for row in unanswered["conversations"]]
    return [
        _finding(
            "unanswered",
            "unanswered",
            title,
            count,
            "conversations",
            ids,
            "Reply to these people today, and check the inbox at least twice a day.",
        )
    ]


def _dropped(follow_up: dict[str, Any]) -> list[dict[str, Any]]:
    overall = follow_up["overall"]
    dropped = overall["dropped_after_one_touch"]
    if dropped < 2 or (overall["dropped_after_one_touch_share"] or 0) < 0.2:
        return []
    title = (
        f"{pct(overall['dropped_after_one_touch_share'])} of contacted leads got one "
        f"message and nothing after ({plural(dropped, 'person', 'people')})"
    )
    return [
        _finding(
            "dropped_after_one_touch",
            "follow_up",
            title,
            overall["dropped_after_one_touch_share"],
            "share",
            follow_up["dropped_after_one_touch"],
            "Follow up at least four or five times over two weeks, on more than "
            "one channel, until the person answers.",
        )
    ]


def _funnel_leaks(funnel: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for pipeline in funnel["pipelines"]:
        leak = pipeline["biggest_leak"]
        if not leak or leak["stopped"] < MIN_GROUP or (leak["share"] or 0) < 0.3:
            continue
        title = (
            f'Most people stop at "{leak["stage"]}" ({pipeline["pipeline"]}): '
            f"{number(leak['stopped'])} of {number(leak['reached'])} who got "
            "there went no further"
        )
        found.append(
            _finding(
                "funnel_leak",
                "funnel",
                title,
                leak["share"],
                "share",
                leak["contact_ids"],
                f'Add a follow-up for people sitting in "{leak["stage"]}" and '
                "find out what stops them.",
            )
        )
    return found


def _no_shows(appointments: dict[str, Any]) -> list[dict[str, Any]]:
    overall = appointments["overall"]
    rate = overall["no_show_rate"] or 0
    if overall["no_show"] < 2 or rate < 0.1:
        return []
    unreminded = sum(1 for row in appointments["no_shows"] if not row["reminded"])
    title = f"{pct(rate)} of appointments were no-shows ({number(overall['no_show'])})"
    if unreminded:
        title += f"; {unreminded} of them had no reminder"
    ids = [row["contact_id"] for row in appointments["no_shows"]]
    return [
        _finding(
            "no_shows",
            "appointments",
            title,
            rate,
            "share",
            ids,
            "Send a reminder the day before and two hours before, ask for a reply "
            "to confirm, and rebook every no-show the same day.",
        )
    ]


def _reminders(appointments: dict[str, Any], hours: int) -> list[dict[str, Any]]:
    overall = appointments["overall"]
    coverage = overall["reminder_coverage"]
    if overall["due"] < MIN_GROUP or coverage is None or coverage >= 0.9:
        return []
    missing = overall["due"] - overall["reminded"]
    title = (
        f"Only {pct(coverage)} of appointments had a reminder in the {hours} hours "
        f"before; {number(missing)} went without"
    )
    ids = [row["contact_id"] for row in appointments["not_reminded"]]
    return [
        _finding(
            "reminders_missing",
            "appointments",
            title,
            coverage,
            "share",
            ids,
            "Turn on automatic appointment reminders for every booking.",
        )
    ]


def _reviews(reviews: dict[str, Any]) -> list[dict[str, Any]]:
    overall = reviews["overall"]
    rows = reviews["jobs_not_asked"]
    jobs = overall["completed_jobs"]
    if len(rows) < MIN_GROUP or not jobs or len(rows) / jobs < 0.3:
        return []
    what = "finished jobs" if overall["jobs_from"] == "appointments" else "payments"
    title = (
        f"{number(len(rows))} of {number(jobs)} {what} were never followed by a "
        "review request"
    )
    return [
        _finding(
            "jobs_not_asked_for_review",
            "reviews",
            title,
            len(rows) / jobs,
            "share",
            [row["contact_id"] for row in rows],
            "Ask every customer for a review a few hours after each finished job.",
        )
    ]


def _lapsed(retention: dict[str, Any], lapsed_days: int) -> list[dict[str, Any]]:
    overall = retention["overall"]
    if overall["lapsed_customers"] < MIN_GROUP:
        return []
    title = (
        f"{number(overall['lapsed_customers'])} customers "
        f"({pct(overall['lapsed_share'])}) "
        f"have not been back in over {lapsed_days} days"
    )
    return [
        _finding(
            "lapsed_customers",
            "retention",
            title,
            overall["lapsed_share"],
            "share",
            [row["contact_id"] for row in retention["lapsed"]],
            'Send lapsed customers a "time for your next visit" message with an '
            "easy way to book.",
        )
    ]


def _sources_not_converting(
    attribution: dict[str, Any], speed: dict[str, Any]
) -> list[dict[str, Any]]:
    overall = attribution["overall"]
    if not overall["converted"]:
        return []
    found = []
    for group in attribution["by_source"]:
        if group["leads"] < 5 or group["converted"]:
            continue
        source = group["source"]
        ids = [row["contact_id"] for row in speed["leads"] if row["source"] == source]
        title = (
            f"{source} brought {number(group['leads'])} leads in the period and none "
            "became "
            "customers"
        )
        found.append(
            _finding(
                "source_not_converting",
                "attribution",
                title,
                group["leads"],
                "leads",
                ids,
                f"Check what {source} leads are asking for, and whether the "
                "money spent on that source pays back.",
            )
        )
    return found
