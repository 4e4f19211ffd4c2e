"""Sequence files: reading them, and finding every problem in them.

A sequence is one YAML file in the workspace's ``sequences/`` folder: a trigger,
ordered steps and exit rules (the README's "Sequences" section has the full
format). Loading never stops at the first problem: every problem is collected
with its file and line, and a sequence with any problem is left out of the
engine until it is fixed, so a typo cannot half-run.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cxm_cli.conditions import did_you_mean, named_in, validate_condition
from cxm_cli.errors import CxmError
from cxm_cli.waits import parse_timedelta
from cxm_cli.yamllines import LinedDocument, load_with_lines

log = logging.getLogger(__name__)

SEQUENCE_FIELDS = {
    "name": "the sequence's name (defaults to the file name)",
    "description": "what the sequence is for",
    "enabled": "false keeps the file but enrols nobody",
    "trigger": "the event that enrols a contact",
    "reenroll": "never (default), always, or a cool-down such as 30d",
    "group": "contacts are in one sequence of a group at a time",
    "priority": "within a group, a higher priority pre-empts a lower one",
    "caps": "false exempts the sequence from per-contact caps (reminders)",
    "exit": "rules that stop the sequence for a contact",
    "steps": "what happens, in order",
}
TRIGGER_FIELDS = {"event", "when"}
COMMON_STEP_FIELDS = {"kind", "name", "when"}
EXIT_SHORTHANDS = {
    "replied": ("message.received",),
    "booked": ("appointment.booked",),
    "opted_out": ("opted_out",),
}
EXIT_FIELDS = {*EXIT_SHORTHANDS, "stage", "event", "when", "switch_to", "pipeline"}
SUFFIXES = (".yaml", ".yml")


@dataclass
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


# Kinds whose main value says which step it is (the tag, the stage, the
# sequence); a text's or a task's wording is not, so fixing a typo in it does
# not make a queued step lose its place.
_KEYED_BY_VALUE = {"add_tag", "remove_tag", "move_stage", "switch", "webhook"}


@dataclass
class StepDef:
    index: int
    kind: str
    spec: dict[str, Any]  # the step as written, with ``kind`` filled in
    line: int | None = None

    @property
    def label(self) -> str | None:
        name = self.spec.get("name")
        return str(name) if name else None

    @property
    def number(self) -> int:
        return self.index + 1

    @functools.cached_property
    def shape(self) -> str:
        """What kind of step it is, apart from its wording: kind, name,
        channel, template (and the tag, stage or sequence it names)."""
        parts = [self.kind, self.label or ""]
        for field_name in ("send", "channel", "template"):
            value = self.spec.get(field_name)
            parts.append(value if isinstance(value, str) else "")
        if self.kind in _KEYED_BY_VALUE:
            parts.append(str(self.spec.get(self.kind)))
        return "|".join(parts)

    @functools.cached_property
    def key(self) -> str:
        """The step's shape and a digest of all it says: a queued step finds
        itself again by this when the file changed around it. Worked out once:
        a loaded step's spec is not changed."""
        written = json.dumps(self.spec, sort_keys=True, default=str)
        digest = hashlib.sha256(written.encode("utf-8")).hexdigest()[:16]
        return f"{self.shape}#{digest}"

    def describe(self) -> str:
        """A short human name: ``3 (send sms nudge_sms)``."""
        words = [self.kind]
        main = self.spec.get(self.kind)
        if isinstance(main, (str, int)) and not isinstance(main, bool):
            words.append(str(main))
        if isinstance(self.spec.get("template"), str):
            words.append(self.spec["template"])
        title = self.label or str(self.number)
        return f"{title} ({' '.join(words)})"


@dataclass
class ExitRule:
    reason: str
    types: tuple[str, ...]
    data_match: dict[str, list[str]] = field(default_factory=dict)
    when: dict[str, Any] | None = None
    switch_to: str | None = None
    line: int | None = None


@dataclass
class Sequence:
    name: str
    path: Path
    description: str = ""
    enabled: bool = True
    trigger_types: tuple[str, ...] = ()
    trigger_when: dict[str, Any] | None = None
    reenroll: str = "never"  # never | always | cooldown
    cooldown: timedelta | None = None
    group: str | None = None
    priority: int = 0
    caps: bool = True
    exits: list[ExitRule] = field(default_factory=list)
    steps: list[StepDef] = field(default_factory=list)

    @functools.cached_property
    def version(self) -> str:
        """A digest of the steps as written: a queued row keeps the version
        that queued it, so an unchanged file needs no checks at all."""
        written = "\n".join(step.key for step in self.steps)
        return hashlib.sha256(written.encode("utf-8")).hexdigest()[:12]

    @functools.cached_property
    def repeated_keys(self) -> frozenset[str]:
        """Keys of steps written more than once."""
        seen: set[str] = set()
        repeated = set()
        for step in self.steps:
            if step.kind != "wait" and step.key in seen:
                repeated.add(step.key)
            seen.add(step.key)
        return frozenset(repeated)

    def row_key(self, step: StepDef) -> str:
        """What a queued row stores of its step: the step and the version."""
        return f"{step.key}@{self.version}"

    def step_position(self, target: int | str) -> int | None:
        """Index of a step named by label or 1-based number."""
        if isinstance(target, int) and not isinstance(target, bool):
            return target - 1 if 1 <= target <= len(self.steps) else None
        for step in self.steps:
            if step.label == str(target):
                return step.index
        text = str(target)
        if text.isdigit():
            return self.step_position(int(text))
        return None


def split_row_key(stored: str | None) -> tuple[str, str]:
    """A queued row's stored key as (step key, file version); :meth:`Sequence.row_key`
    writes it."""
    key, _, version = (stored or "").partition("@")
    return key, version


@dataclass
class SequenceSet:
    sequences: dict[str, Sequence]
    problems: list[Problem]
    invalid: dict[str, int]  # file name -> number of problems

    @property
    def active(self) -> dict[str, Sequence]:
        return {
            name: sequence
            for name, sequence in self.sequences.items()
            if sequence.enabled and sequence.path.name not in self.invalid
        }

    def usable(self, name: str) -> Sequence | None:
        return self.active.get(name)


_CACHE: dict[str, tuple[tuple, SequenceSet]] = {}
_PINNED = threading.local()


@contextlib.contextmanager
def pinned_sequences(workspace) -> Iterator[SequenceSet]:
    """Read the sequence files once for a stretch of work (a runner batch).

    Outside it every load checks the files' sizes and times, which is cheap
    but adds up over the several events each step records.
    """
    previous = getattr(_PINNED, "sets", None)
    current = load_sequences(workspace)
    # Keyed by the workspace root: its text is computed once per Path, while
    # every event's hooks ask again.
    _PINNED.sets = {str(workspace.root): current}
    try:
        yield current
    finally:
        _PINNED.sets = previous


def load_sequences(workspace) -> SequenceSet:
    """Every sequence of the workspace with every problem found (cached)."""
    pinned = getattr(_PINNED, "sets", None)
    if pinned and str(workspace.root) in pinned:
        return pinned[str(workspace.root)]
    folder = workspace.sequences_dir
    signature = _signature(workspace)
    cached = _CACHE.get(str(folder))
    if cached is not None and cached[0] == signature:
        return cached[1]
    result = _load(workspace)
    _CACHE[str(folder)] = (signature, result)
    if result.problems:
        log.warning(
            "%d problems in sequence files; %d files left out",
            len(result.problems),
            len(result.invalid),
        )
    return result


def _signature(workspace) -> tuple:
    parts: list[tuple] = []
    folders = [workspace.sequences_dir, workspace.templates_dir]
    try:
        from cxm_cli.rendering import SHIPPED_TEMPLATES_DIR

        folders.append(SHIPPED_TEMPLATES_DIR)
    except ImportError:
        pass
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    stat = entry.stat()
                    parts.append((entry.path, stat.st_mtime_ns, stat.st_size))
        except OSError:
            parts.append((str(folder), None, None))
    # Segment and stage names are checked against cxm.toml.
    try:
        stat = workspace.config_path.stat()
        parts.append((str(workspace.config_path), stat.st_mtime_ns, stat.st_size))
    except OSError:
        parts.append((str(workspace.config_path), None, None))
    return tuple(sorted(parts, key=repr))


def sequence_files(workspace) -> list[Path]:
    folder = workspace.sequences_dir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def _load(workspace) -> SequenceSet:
    from cxm_cli.features import load_features

    load_features()  # every step kind must be registered before validation
    sequences: dict[str, Sequence] = {}
    problems: list[Problem] = []
    documents: dict[str, LinedDocument] = {}

    claims: dict[str, list[tuple[Path, int | None]]] = {}
    for path in sequence_files(workspace):
        reader = _FileReader(path)
        sequence = reader.read()
        problems.extend(reader.problems)
        if sequence is None:
            continue
        claims.setdefault(sequence.name, []).append((path, reader.line(("name",))))
        if sequence.name in sequences:
            continue
        sequences[sequence.name] = sequence
        documents[path.name] = reader.document
    # Limitation: of two files claiming one name, the first by file name stays
    # in ``sequences`` (so queued steps find a sequence and are deferred, not
    # ended); its exit rules, and its steps' channels for opt-out skipping,
    # still apply to the name's enrollments until the clash is fixed.
    problems.extend(_duplicate_name_problems(claims))

    for sequence in sequences.values():
        problems.extend(_cross_checks(workspace, sequence, sequences, documents))

    invalid: dict[str, int] = {}
    for problem in problems:
        invalid[problem.file] = invalid.get(problem.file, 0) + 1
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return SequenceSet(sequences=sequences, problems=problems, invalid=invalid)


def _duplicate_name_problems(
    claims: dict[str, list[tuple[Path, int | None]]],
) -> list[Problem]:
    """A name claimed by two files is a problem in each of them.

    Neither file can be told apart as the real one, so both are left out: the
    name's enrollments and queued steps wait (deferred) until one is renamed,
    rather than a stray copy silently taking the sequence over.
    """
    problems: list[Problem] = []
    for name, files in claims.items():
        if len(files) < 2:
            continue
        for path, line in files:
            others = ", ".join(other.name for other, _ in files if other != path)
            problems.append(
                Problem(
                    path.name,
                    line,
                    f"name: {name!r} is also the name of {others}; rename one "
                    "(both enrol nobody until then)",
                )
            )
    return problems


class _FileReader:
    """Reads one sequence file, collecting problems with their lines."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[Problem] = []
        self.document = LinedDocument(None)

    def line(self, path: tuple) -> int | None:
        return self.document.line(path)

    def problem(self, path: tuple, message: str) -> None:
        self.problems.append(Problem(self.path.name, self.line(path), message))

    def read(self) -> Sequence | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(self.path.name, None, f"cannot read: {exc}"))
            return None
        self.document = load_with_lines(text)
        for line, message in self.document.problems:
            self.problems.append(Problem(self.path.name, line, message))
        data = self.document.data
        if data is None and not self.document.problems:
            self.problem((), "the file is empty")
            return None
        if not isinstance(data, dict):
            if data is not None:
                self.problem(
                    (), "a sequence file must be a mapping (name:, steps:, ...)"
                )
            return None

        for key in data:
            if key not in SEQUENCE_FIELDS:
                hint = did_you_mean(key, SEQUENCE_FIELDS)
                self.problem((key,), f"{key}: unknown field{hint}")

        sequence = Sequence(
            name=str(data.get("name") or self.path.stem), path=self.path
        )
        sequence.description = str(data.get("description") or "")
        sequence.enabled = self._boolean(data, "enabled", True)
        sequence.caps = self._boolean(data, "caps", True)
        self._read_trigger(data.get("trigger"), sequence)
        self._read_reenroll(data.get("reenroll", "never"), sequence)
        self._read_group(data, sequence)
        self._read_exits(data.get("exit"), sequence)
        self._read_steps(data.get("steps"), sequence)
        return sequence

    def _boolean(self, data: dict, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.problem((key,), f"{key}: must be true or false")
            return default
        return value

    def _read_trigger(self, trigger: Any, sequence: Sequence) -> None:
        if trigger is None:
            return  # enrolled only by switches and exit rules
        if isinstance(trigger, str):
            trigger = {"event": trigger}
        if not isinstance(trigger, dict):
            self.problem(
                ("trigger",), "trigger: write an event type or {event:, when:}"
            )
            return
        for key in trigger:
            if key not in TRIGGER_FIELDS:
                hint = did_you_mean(key, TRIGGER_FIELDS)
                self.problem(("trigger", key), f"trigger.{key}: unknown field{hint}")
        types = trigger.get("event")
        types = [types] if isinstance(types, str) else types
        if not types or not all(isinstance(t, str) and t.strip() for t in types):
            self.problem(("trigger", "event"), "trigger.event: name an event type")
            return
        sequence.trigger_types = tuple(t.strip() for t in types)
        self._check_event_types(("trigger", "event"), sequence.trigger_types)
        when = trigger.get("when")
        if when is not None:
            for where, message in validate_condition(when, ("trigger", "when")):
                self.problem(where, message)
            sequence.trigger_when = when if isinstance(when, dict) else None

    def _check_exit_channels(self, path: tuple, kind: str, channels) -> None:
        """A misspelt channel would make the rule never fire: messages would
        go on after the reply it was meant to stop at."""
        from cxm_cli.contacts import CHANNELS_WITH_CONSENT
        from cxm_cli.inbox import INBOUND_CHANNELS

        known = INBOUND_CHANNELS if kind == "replied" else CHANNELS_WITH_CONSENT
        if kind not in ("replied", "opted_out"):
            return
        for channel in channels:
            if str(channel) not in known:
                hint = did_you_mean(str(channel), known)
                self.problem(
                    path,
                    f"{kind}: unknown channel {channel!r}{hint}; "
                    f"use {', '.join(known)}",
                )

    def _check_event_types(self, path: tuple, types) -> None:
        """Custom event types are fine; one a letter away from a known one is not."""
        from cxm_cli.events import KNOWN_TYPES

        for event_type in types:
            if event_type in KNOWN_TYPES:
                continue
            close = difflib.get_close_matches(event_type, KNOWN_TYPES, n=1, cutoff=0.85)
            if close:
                self.problem(
                    path,
                    f"{event_type}: unknown event type (did you mean {close[0]!r}?)",
                )

    def _read_reenroll(self, value: Any, sequence: Sequence) -> None:
        if value in ("never", "always"):
            sequence.reenroll = value
            return
        try:
            sequence.cooldown = parse_timedelta(value)
            sequence.reenroll = "cooldown"
        except ValueError as exc:
            self.problem(
                ("reenroll",),
                f"reenroll: write never, always or a cool-down such as 30d ({exc})",
            )

    def _read_group(self, data: dict, sequence: Sequence) -> None:
        group = data.get("group")
        if group is not None and not (isinstance(group, str) and group.strip()):
            self.problem(("group",), "group: must be a name")
        sequence.group = group.strip() if isinstance(group, str) else None
        priority = data.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.problem(("priority",), "priority: must be a whole number")
        else:
            sequence.priority = priority

    def _read_exits(self, rules: Any, sequence: Sequence) -> None:
        if rules is None:
            return
        if not isinstance(rules, list):
            self.problem(("exit",), "exit: must be a list of rules such as - replied")
            return
        for index, rule in enumerate(rules):
            parsed = self._read_exit(rule, ("exit", index))
            if parsed is not None:
                sequence.exits.append(parsed)

    def _read_exit(self, rule: Any, path: tuple) -> ExitRule | None:
        line = self.line(path)
        if isinstance(rule, str):
            rule = {rule: None}
        if not isinstance(rule, dict) or not rule:
            self.problem(
                path,
                "exit rule: write replied, booked, opted_out, "
                "{stage: NAME} or {event: TYPE}",
            )
            return None
        for key in rule:
            if key not in EXIT_FIELDS:
                hint = did_you_mean(key, EXIT_FIELDS)
                self.problem((*path, key), f"{key}: unknown exit rule{hint}")
                return None

        kinds = [key for key in rule if key in (*EXIT_SHORTHANDS, "stage", "event")]
        if len(kinds) != 1:
            self.problem(
                path,
                "exit rule: name exactly one of replied, booked, "
                "opted_out, stage, event",
            )
            return None
        kind = kinds[0]
        value = rule[kind]
        exit_rule = ExitRule(reason=kind, types=(), line=line)

        if kind in EXIT_SHORTHANDS:
            exit_rule.types = EXIT_SHORTHANDS[kind]
            if value not in (None, True):
                channels = value if isinstance(value, list) else [value]
                self._check_exit_channels((*path, kind), kind, channels)
                exit_rule.data_match = {"channel": [str(c) for c in channels]}
                exit_rule.reason = f"{kind} ({', '.join(map(str, channels))})"
        elif kind == "stage":
            stages = value if isinstance(value, list) else [value]
            if not stages or not all(isinstance(s, str) and s for s in stages):
                self.problem((*path, "stage"), "stage: name the stage(s)")
                return None
            exit_rule.types = ("stage.changed",)
            exit_rule.data_match = {"to": stages}
            if rule.get("pipeline"):
                exit_rule.data_match["pipeline"] = [str(rule["pipeline"])]
            exit_rule.reason = f"stage {', '.join(stages)}"
        else:
            types = value if isinstance(value, list) else [value]
            if not types or not all(isinstance(t, str) and t for t in types):
                self.problem((*path, "event"), "event: name the event type(s)")
                return None
            exit_rule.types = tuple(types)
            exit_rule.reason = f"event {', '.join(types)}"
            self._check_event_types((*path, "event"), types)

        if rule.get("when") is not None:
            for where, message in validate_condition(rule["when"], (*path, "when")):
                self.problem(where, message)
            exit_rule.when = rule["when"] if isinstance(rule["when"], dict) else None
        switch_to = rule.get("switch_to")
        if switch_to is not None:
            if not isinstance(switch_to, str):
                self.problem((*path, "switch_to"), "switch_to: name a sequence")
            else:
                exit_rule.switch_to = switch_to
        return exit_rule

    def _read_steps(self, steps: Any, sequence: Sequence) -> None:
        from cxm_cli.steps import STEP_KINDS

        if not isinstance(steps, list) or not steps:
            self.problem(("steps",), "steps: a sequence needs a list of steps")
            return
        labels: dict[str, int] = {}
        for index, raw in enumerate(steps):
            path = ("steps", index)
            spec = self._step_spec(raw, path, STEP_KINDS)
            if spec is None:
                continue
            step = StepDef(
                index=index, kind=spec["kind"], spec=spec, line=self.line(path)
            )
            sequence.steps.append(step)
            for key in ("name", "goto", "else"):
                if isinstance(spec.get(key), bool):
                    # YAML 1.1 reads yes/no/on/off (any case) as true/false.
                    self.problem(
                        (*path, key),
                        f"{key}: YAML reads yes, no, on and off as true or false; "
                        f'quote the step name, e.g. {key}: "{_yaml_word(spec[key])}"',
                    )
            if step.label:
                if step.label in labels:
                    self.problem(
                        (*path, "name"), f"name: step name {step.label!r} is used twice"
                    )
                labels[step.label] = index
            if spec.get("when") is not None:
                for where, message in validate_condition(spec["when"], (*path, "when")):
                    self.problem(where, message)
            for message in STEP_KINDS[step.kind].validate(spec):
                self.problem(self._field_path(path, spec, message), message)

    def _step_spec(self, raw: Any, path: tuple, kinds) -> dict[str, Any] | None:
        if isinstance(raw, str):
            raw = {raw.strip(): None}
        if not isinstance(raw, dict) or not raw:
            self.problem(
                path,
                "a step must be a mapping such as {send: sms, "
                "template: NAME} or {wait: 1d}",
            )
            return None
        if "kind" in raw:
            kind = raw["kind"]
            if kind not in kinds:
                hint = did_you_mean(str(kind), kinds)
                self.problem((*path, "kind"), f"kind: unknown step kind {kind!r}{hint}")
                return None
            return dict(raw)
        for key in raw:
            if key in kinds:
                return {"kind": key, **raw}
        guess = next((key for key in raw if key not in COMMON_STEP_FIELDS), None)
        if guess is None:
            self.problem(path, "step: name its kind (send, wait, ...)")
            return None
        hint = did_you_mean(guess, kinds)
        self.problem((*path, guess), f"{guess}: unknown step kind{hint}")
        return None

    @staticmethod
    def _field_path(path: tuple, spec: dict, message: str) -> tuple:
        """Point a validator's sentence at the field it starts with."""
        head = message.split(":", 1)[0].strip().strip("'\"`")
        return (*path, head) if head in spec else path


def _cross_checks(workspace, sequence: Sequence, sequences, documents) -> list[Problem]:
    """Checks that need more than one file: templates, sequence names, labels."""
    document = documents.get(sequence.path.name) or LinedDocument(None)
    problems: list[Problem] = []

    def add(path: tuple, message: str) -> None:
        problems.append(Problem(sequence.path.name, document.line(path), message))

    templates = _templates(workspace)
    references: list[tuple[tuple, Any]] = []
    for step in sequence.steps:
        path = ("steps", step.index)
        template = step.spec.get("template")
        if isinstance(template, str) and templates is not None:
            if template not in templates:
                hint = did_you_mean(template, templates)
                add(
                    (*path, "template"),
                    f"template: unknown template {template!r}{hint}",
                )
            else:
                problem = _template_channel_problem(workspace, step, template)
                if problem:
                    add((*path, "template"), problem)
        for key in ("goto", "else"):
            target = step.spec.get(key)
            if isinstance(target, bool):
                continue  # reported as a YAML yes/no already
            if target is not None and step.kind in ("branch", "goto"):
                position = sequence.step_position(target)
                if position is None:
                    labels = [s.label for s in sequence.steps if s.label]
                    hint = did_you_mean(str(target), labels)
                    add((*path, key), f"{key}: no step named {target!r}{hint}")
                elif position <= step.index and not any(
                    s.kind == "wait" for s in sequence.steps[position : step.index]
                ):
                    add(
                        (*path, key),
                        f"{key}: going back to {target!r} with no wait in between "
                        "would loop at once",
                    )
        if step.kind == "switch":
            references.append(((*path, "switch"), step.spec.get("switch")))
        if step.kind == "move_stage":
            problem = _move_stage_problem(workspace, step.spec)
            if problem:
                field_name = "stage" if "stage" in step.spec else "move_stage"
                if problem.startswith("pipeline:"):
                    field_name = "pipeline"
                add((*path, field_name), problem)
    for index, rule in enumerate(sequence.exits):
        if rule.switch_to:
            references.append((("exit", index, "switch_to"), rule.switch_to))

    for path, condition in _conditions(sequence):
        for where, key, names, pipeline in named_in(condition, path):
            problem = _unknown_name(workspace, key, names, pipeline)
            if problem:
                add(where, problem)
    for rule in sequence.exits:
        stages = rule.data_match.get("to")
        if rule.types == ("stage.changed",) and stages:
            pipeline = (rule.data_match.get("pipeline") or [None])[0]
            problem = _unknown_name(workspace, "stage", stages, pipeline)
            if problem:
                problems.append(Problem(sequence.path.name, rule.line, problem))

    for path, name in references:
        if not isinstance(name, str) or name not in sequences:
            hint = did_you_mean(str(name), sequences)
            add(path, f"{path[-1]}: no sequence named {name!r}{hint}")
        elif name == sequence.name:
            add(path, f"{path[-1]}: a sequence cannot switch to itself")
    return problems


def tasks_without_staff(workspace, sequence_set: SequenceSet) -> list[str]:
    """Enabled sequences with a staff task or notification that has nowhere
    to go: emailed (not a webhook), no ``to:``, and no ``[staff] email``.

    Not a problem of the file (a new workspace has no staff address yet), but
    such a step fails when it runs, after the person may have been promised a
    call; ``cxm status`` and ``cxm sequences validate`` warn about it.
    """
    if workspace.setting("staff.email"):
        return []
    return sorted(
        sequence.name
        for sequence in sequence_set.active.values()
        if any(
            step.kind in ("task", "notify")
            and step.spec.get("via", "email") == "email"
            and not step.spec.get("to")
            for step in sequence.steps
        )
    )


def _conditions(sequence: Sequence) -> Iterator[tuple[tuple, Any]]:
    """Every condition of a sequence, with the path of the key that holds it."""
    if sequence.trigger_when:
        yield ("trigger", "when"), sequence.trigger_when
    for step in sequence.steps:
        for key in ("when", "branch"):
            if isinstance(step.spec.get(key), dict):
                yield ("steps", step.index, key), step.spec[key]
    for index, rule in enumerate(sequence.exits):
        if rule.when:
            yield ("exit", index, "when"), rule.when


def _unknown_name(workspace, key: str, names: list[str], pipeline: str | None):
    """Why a segment or stage a sequence names would never match; None if
    every name is known."""
    if key == "segment":
        from cxm_cli.segments import segment_config

        config = segment_config(workspace)
        for name in names:
            if name in config.segments:
                continue
            if any(f"[segments.{name}]" in p.place for p in config.problems):
                return (
                    f"segment: {name!r} has problems in cxm.toml "
                    "(see cxm contacts segments)"
                )
            hint = did_you_mean(name, config.segments)
            return f"segment: no segment named {name!r} in cxm.toml{hint}"
        return None

    from cxm_cli.pipelines import pipeline_config

    config = pipeline_config(workspace)
    if pipeline is not None and pipeline not in config.pipelines:
        hint = did_you_mean(pipeline, config.pipelines)
        return f"pipeline: no pipeline named {pipeline!r} in cxm.toml{hint}"
    pipelines = (
        [config.pipelines[pipeline]] if pipeline else list(config.pipelines.values())
    )
    known = {stage.name for each in pipelines for stage in each.stages}
    missing = [name for name in names if name not in known]
    if not missing:
        return None
    where = f"pipeline {pipeline!r}" if pipeline else "any pipeline"
    said = " and ".join(
        f"{name!r}{did_you_mean(name, known) or _same_but_case(name, known)}"
        for name in missing
    )
    return (
        f"stage: {said} {'is' if len(missing) == 1 else 'are'} not a stage of {where}"
    )


def _same_but_case(name: str, known) -> str:
    for each in sorted(known):
        if each.lower() == name.lower():
            return f" (did you mean {each!r}?)"
    return ""


def _yaml_word(value: bool) -> str:
    return "yes" if value else "no"


def _move_stage_problem(workspace, spec: dict[str, Any]) -> str | None:
    """Why a move_stage step would fail (no such pipeline or stage)."""
    from cxm_cli.pipelines import pipeline_config

    stage = spec.get("stage") or spec.get("move_stage")
    if not isinstance(stage, str) or not stage.strip():
        return None
    try:
        pipeline = pipeline_config(workspace).pipeline(spec.get("pipeline"))
    except CxmError as exc:
        return f"pipeline: {exc.message}"
    if pipeline.find_stage(stage) is None:
        hint = did_you_mean(stage, [each.name for each in pipeline.stages])
        return f"stage: pipeline {pipeline.name!r} has no stage {stage!r}{hint}"
    return None


def _templates(workspace) -> set[str] | None:
    try:
        from cxm_cli.rendering import template_names
    except ImportError:
        return None
    return template_names(workspace)


def _template_channel_problem(workspace, step: StepDef, template: str) -> str | None:
    from cxm_cli.rendering import load_template, syntax_problem

    try:
        loaded = load_template(workspace, template)
    except CxmError as exc:
        return f"template: {template!r} cannot be read: {exc}"
    for part in (loaded.body, loaded.subject or ""):
        problem = syntax_problem(part)
        if problem:
            return f"template: {template!r} ({loaded.path}): {problem}"
    channel = step.spec.get("send") if step.kind == "send" else step.spec.get("channel")
    if not isinstance(channel, str):
        return None
    if channel not in loaded.channels:
        return (
            f"template: {template!r} is for {', '.join(loaded.channels)}, not {channel}"
        )
    return None
