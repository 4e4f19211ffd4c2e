"""The funnel: how far people get through each pipeline, and where they stop.

Built from ``stage.changed`` events only. The cohort of a pipeline is everyone
whose first move in it falls in the period. A stage is *reached* by everyone
whose furthest stage is at or after it (skipping a stage passes through it), so
conversion from one stage to the next is ``reached[next] / reached[stage]``.
People *stop* at their furthest stage when they never became customers and
never reached a won stage; the stage where most stop is the biggest leak.

Stage order and kinds come from the workspace's pipelines (``cxm.toml``) when
the pipelines part is present. Stages it does not know are ordered by how many
other stages people had passed before entering them, and named like a lost
stage ("lost", "disqualified", ...) they count as lost.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from typing import Any

from cxm_cli.audit.history import ContactHistory
from cxm_cli.audit.options import AuditOptions
from cxm_cli.audit.stats import Breakdown, epoch, median, share

LOST_NAMES = {
    "lost",
    "closed lost",
    "dead",
    "disqualified",
    "junk",
    "cancelled",
    "canceled",
    "archived",
    "unqualified",
}
WON_NAMES = {"won", "closed won"}


@functools.lru_cache(maxsize=4096)
def stage_key(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def configured_pipelines(workspace) -> dict[str, list[tuple[str, str]]]:
    """``{pipeline: [(stage, kind), ...]}`` from cxm.toml, if pipelines exist."""
    if workspace is None:
        return {}
    try:
        from cxm_cli.pipelines import pipeline_config
    except ImportError:
        return {}
    config = pipeline_config(workspace)
    return {
        pipeline.name: [(stage.name, stage.kind) for stage in pipeline.stages]
        for pipeline in config.pipelines.values()
    }


# The lead journey: a funnel every timeline has, drawn from what happened
# (messages, bookings, visits, payments) rather than from pipeline stages, so
# an audit of raw exports with no pipeline still shows where people stop.
JOURNEY = "lead journey"
JOURNEY_STAGES = [
    ("lead", "open"),
    ("contacted", "open"),
    ("responded", "open"),
    ("booked", "open"),
    ("served", "open"),
    ("paid", "won"),
]


def journey_moves(history: ContactHistory) -> list[tuple[str, str, str | None, str]]:
    """A lead's milestones as pipeline moves, in time order.

    Each is the first time after the lead came in: a reply (contacted), their
    response to it, a booking, a completed appointment (served), a payment.
    """
    start = history.first_inbound_at
    touches, response = history.lead_follow_up()
    found = [(start, 0, "lead")]
    if touches:
        found.append((touches[0], 1, "contacted"))
    if response:
        found.append((response, 2, "responded"))
    milestones = (
        (3, "booked", [at for at in history.bookings if at >= start]),
        (
            4,
            "served",
            [
                a.outcome_at
                for a in history.appointments
                if a.outcome == "completed" and a.outcome_at >= start
            ],
        ),
        (
            5,
            "paid",
            [at for at, amount in history.payments if amount > 0 and at >= start],
        ),
    )
    for order, stage, times in milestones:
        if times:
            found.append((min(times), order, stage))
    found.sort()
    moves, previous = [], None
    for at, _, stage in found:
        moves.append((at, JOURNEY, previous, stage))
        previous = stage
    return moves


class FunnelTally:
    __slots__ = ("entered", "won", "lost", "customers")

    def __init__(self):
        self.entered = self.won = self.lost = self.customers = 0

    def result(self) -> dict[str, Any]:
        return {
            "entered": self.entered,
            "won": self.won,
            "won_share": share(self.won, self.entered),
            "lost": self.lost,
            "customers": self.customers,
            "customer_share": share(self.customers, self.entered),
        }


class Funnel:
    def __init__(
        self, options: AuditOptions, configured: dict[str, list] | None = None
    ):
        self.options = options
        self.configured = {stage_key(k): v for k, v in (configured or {}).items()}
        self.configured[JOURNEY] = JOURNEY_STAGES
        self.names: dict[str, str] = {}
        self.stage_labels: dict[str, str] = {
            stage_key(stage): stage
            for stages in self.configured.values()
            for stage, _ in stages
        }
        self.folded: dict[tuple, tuple] = {}  # (pipeline, from, to) as keys
        self.stages_seen: dict[str, set[str]] = {}
        # pipeline -> [(contact_id, source, channel, customer, moves)]
        self.paths: dict[str, list[tuple]] = defaultdict(list)

    def add(self, history: ContactHistory) -> None:
        if self.options.in_period(history.first_inbound_at):
            self.paths[JOURNEY].append(
                (
                    history.contact_id,
                    history.source,
                    history.channel,
                    history.became_customer(),
                    journey_moves(history),
                )
            )
        if not history.stage_moves:
            return
        # Moves keep stage keys (folded once here), not the names as written.
        by_pipeline: dict[str, list] = {}
        folded = self.folded
        for at, pipeline, before, after in history.stage_moves:
            keys = folded.get((pipeline, before, after))
            if keys is None:
                keys = self._fold(pipeline, before, after)
            by_pipeline.setdefault(keys[0], []).append((at, *keys))
        customer = history.became_customer()
        for pipeline, moves in by_pipeline.items():
            if self.options.in_period(moves[0][0]):
                self.paths[pipeline].append(
                    (
                        history.contact_id,
                        history.source,
                        history.channel,
                        customer,
                        moves,
                    )
                )

    def _fold(self, pipeline: str, before, after: str) -> tuple:
        key, after_key = stage_key(pipeline), stage_key(after)
        self.names.setdefault(key, pipeline)
        self.stage_labels.setdefault(after_key, after)
        self.stages_seen.setdefault(key, set()).add(after_key)
        keys = (key, stage_key(before) if before else None, after_key)
        self.folded[(pipeline, before, after)] = keys
        return keys

    def result(self) -> dict[str, Any]:
        self.names[JOURNEY] = JOURNEY
        # The journey first, then pipelines, the busiest first.
        ordered = sorted(
            self.paths.items(), key=lambda i: (i[0] != JOURNEY, -len(i[1]), i[0])
        )
        pipelines = [self._pipeline(key, paths) for key, paths in ordered]
        return {"pipelines": pipelines}

    def _pipeline(self, key: str, paths: list[tuple]) -> dict[str, Any]:
        order = self._stage_order(key, paths)
        forward = [stage for stage, kind in order if kind != "lost"]
        kinds = {stage: kind for stage, kind in order}
        position = {stage: i for i, stage in enumerate(forward)}
        furthest_count = [0] * len(forward)
        stopped: list[list[int]] = [[] for _ in forward]
        entered_lost: dict[str, int] = defaultdict(int)
        stays: dict[str, list[float]] = defaultdict(list)
        groups = Breakdown(FunnelTally)

        for contact_id, source, channel, customer, moves in paths:
            visited = [moves[0][2]] if moves[0][2] else []
            visited += [to for _, _, _, to in moves]
            furthest = max((position.get(s, -1) for s in visited), default=-1)
            if furthest >= 0:
                furthest_count[furthest] += 1
            won = any(kinds.get(s) == "won" for s in visited)
            lost = kinds.get(visited[-1]) == "lost"
            for stage in {s for s in visited if kinds.get(s) == "lost"}:
                entered_lost[stage] += 1
            if furthest >= 0 and not customer and not won:
                stopped[furthest].append(contact_id)
            if len(moves) > 1:
                times = [epoch(move[0]) for move in moves]
                for index in range(len(moves) - 1):
                    stays[moves[index][3]].append(times[index + 1] - times[index])
            for tally in groups.parts(source, channel):
                tally.entered += 1
                tally.won += won
                tally.lost += lost
                tally.customers += customer

        # Everyone whose furthest stage is at or after a stage has reached it.
        reached = list(itertools.accumulate(reversed(furthest_count)))[::-1]
        stages = []
        for index, stage in enumerate(forward):
            following = reached[index + 1] if index + 1 < len(forward) else None
            stages.append(
                {
                    "stage": self.stage_labels.get(stage, stage),
                    "kind": kinds[stage],
                    "reached": reached[index],
                    "conversion_to_next": (
                        None if following is None else share(following, reached[index])
                    ),
                    "stopped_here": len(stopped[index]),
                    "median_seconds_in_stage": median(stays.get(stage, [])),
                    "stays": len(stays.get(stage, [])),
                }
            )
        for stage, kind in order:
            if kind == "lost":
                stages.append(
                    {
                        "stage": self.stage_labels.get(stage, stage),
                        "kind": kind,
                        "reached": entered_lost.get(stage, 0),
                        "conversion_to_next": None,
                        "stopped_here": None,
                        "median_seconds_in_stage": None,
                        "stays": 0,
                    }
                )

        leak = max(
            range(len(forward)), key=lambda i: (len(stopped[i]), -i), default=None
        )
        biggest = None
        if leak is not None and stopped[leak]:
            biggest = {
                "stage": self.stage_labels.get(forward[leak], forward[leak]),
                "stopped": len(stopped[leak]),
                "reached": reached[leak],
                "share": share(len(stopped[leak]), reached[leak]),
                "contact_ids": stopped[leak],
            }
        return {
            "pipeline": self.names.get(key, key),
            "entered": len(paths),
            "stages": stages,
            "biggest_leak": biggest,
            **groups.result("entered"),
        }

    def _stage_order(self, key: str, paths: list[tuple]) -> list[tuple[str, str]]:
        """[(stage key, kind)]: configured stages first, then those seen only."""
        configured = [
            (stage_key(name), kind) for name, kind in self.configured.get(key, [])
        ]
        known = {stage for stage, _ in configured}
        if key == JOURNEY or not self.stages_seen.get(key, set()) - known:
            return configured
        depth: dict[str, list[int]] = defaultdict(list)
        for *_, moves in paths:
            seen: list[str] = []
            for _, _, _, stage in moves:
                if stage not in seen:
                    if stage not in known:
                        depth[stage].append(len(seen))
                    seen.append(stage)
        unknown = sorted(depth, key=lambda s: (sum(depth[s]) / len(depth[s]), s))
        derived = [(stage, _kind_from_name(stage)) for stage in unknown]
        return configured + derived


def _kind_from_name(stage: str) -> str:
    if stage in LOST_NAMES:
        return "lost"
    if stage in WON_NAMES:
        return "won"
    return "open"
