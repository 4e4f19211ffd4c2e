"""Message templates: finding them, and rendering them for one contact.

A template is a file ``<name>.j2``: YAML front matter between ``---`` lines,
then the message body in Jinja2::

    ---
    channels: [sms]
    subject: "Thanks for reaching out"      # email only; a Jinja template too
    fallbacks: {first_name: there}
    description: First text to a new lead
    ---
    Hi {{ first_name }}, thanks for contacting {{ business.name }}!

An optional sibling ``<name>.html.j2`` (no front matter) is the HTML part of an
email; files named ``_<piece>.j2`` are shared pieces for ``{% include %}``. The
workspace's ``templates/`` folder overrides the shipped defaults in
``cxm_cli/templates/messages/`` name by name.

Rendering runs in Jinja's sandbox. A variable that is missing, ``None`` or blank
takes its fallback (the template's own first, then ``[templates.fallbacks]`` in
cxm.toml); printing one that has no fallback raises :class:`TemplateError`
naming the template and the variable, so nobody gets "Hi ," or a raw
placeholder. Testing a missing variable (``{% if company %}``) is allowed and
reads as false.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cxm_cli import clock as clocks
from cxm_cli.errors import NotFound, TemplateError
from cxm_cli.sms_encoding import SegmentInfo, sms_segments

log = logging.getLogger(__name__)

SHIPPED_TEMPLATES_DIR = Path(__file__).resolve().parent / "templates" / "messages"
SUFFIX = ".j2"
HTML_SUFFIX = ".html.j2"
CHANNELS = ("email", "sms")
FRONT_MATTER_KEYS = {"channels", "subject", "fallbacks", "description"}
TEXT_NAME = "(text)"


@dataclass
class MessageTemplate:
    name: str
    path: Path
    source: str  # "shipped" or "workspace"
    channels: list[str]
    subject: str | None
    fallbacks: dict[str, Any]
    description: str
    body: str  # the Jinja source after the front matter
    body_line: int  # line of the file the body starts on (1-based)
    html_path: Path | None = None


@dataclass
class TemplateInfo:
    name: str
    channels: list[str]
    source: str
    subject: str | None
    description: str
    path: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": self.channels,
            "source": self.source,
            "subject": self.subject,
            "description": self.description,
            "path": self.path,
            "error": self.error,
        }


@dataclass
class RenderedMessage:
    subject: str | None
    body: str
    html_body: str | None
    template: str | None
    channel: str
    fallbacks_used: list[str] = field(default_factory=list)
    _sms: SegmentInfo | None = field(default=None, repr=False)

    @property
    def sms(self) -> SegmentInfo | None:
        """Encoding and segments of a text (None for an email), worked out
        when asked: previews show them, sending does not need them."""
        if self.channel != "sms":
            return None
        if self._sms is None:
            self._sms = sms_segments(self.body)
        return self._sms


# ---------------------------------------------------------------- finding


def template_folders(workspace) -> list[tuple[str, Path]]:
    """Where templates are looked up, first match wins."""
    return [("workspace", workspace.templates_dir), ("shipped", SHIPPED_TEMPLATES_DIR)]


def _template_files(workspace) -> dict[str, tuple[str, Path]]:
    """Template name -> (source, file), the workspace's own winning (shared)."""
    folders = template_folders(workspace)
    listings = tuple(_folder_templates(folder) for _, folder in folders)
    cached = _MERGED.get(str(workspace.root))
    # The listings are cached objects while their folders are unchanged.
    if cached is not None and all(map(operator.is_, cached[0], listings)):
        return cached[1]

    found: dict[str, tuple[str, Path]] = {}
    for (source, _), paths in reversed(list(zip(folders, listings, strict=True))):
        for path in paths:
            found[path.name[: -len(SUFFIX)]] = (source, path)
    _MERGED[str(workspace.root)] = (listings, found)
    return found


_MERGED: dict[str, tuple[tuple, dict[str, tuple[str, Path]]]] = {}
_LISTINGS: dict[Path, tuple[int, tuple[Path, ...]]] = {}
_NO_FILES: tuple[Path, ...] = ()
# File systems stamp a folder with a coarse clock, so two changes a few
# milliseconds apart can leave one mtime: a listing is kept only when the
# folder had been still for a while before it was read.
_SETTLED_NS = 2_000_000_000


def _folder_templates(folder: Path) -> tuple[Path, ...]:
    """The message templates in one folder, re-listed only when it changes."""
    try:
        info = os.stat(folder)
    except OSError:
        return _NO_FILES
    if not stat.S_ISDIR(info.st_mode):
        return _NO_FILES
    cached = _LISTINGS.get(folder)
    if cached is not None and cached[0] == info.st_mtime_ns:
        return cached[1]

    paths = tuple(
        path
        for path in folder.glob(f"*{SUFFIX}")
        if not (path.name.endswith(HTML_SUFFIX) or path.name.startswith("_"))
    )
    if time.time_ns() - info.st_mtime_ns > _SETTLED_NS:
        _LISTINGS[folder] = (info.st_mtime_ns, paths)
    return paths


def template_names(workspace) -> set[str]:
    """Names of every template the workspace can use (shipped and its own)."""
    return set(_template_files(workspace))


def load_template(workspace, name: str) -> MessageTemplate:
    """Read a template by name; the workspace's copy wins over the shipped one."""
    pinned = _pinned(workspace)
    if pinned is not None:
        template = pinned.templates.get(name)
        if template is None:
            template = pinned.templates[name] = _load_template(workspace, name)
        return template
    return _load_template(workspace, name)


def _load_template(workspace, name: str) -> MessageTemplate:
    files = _template_files(workspace)
    if name not in files:
        folders = ", ".join(str(folder) for _, folder in template_folders(workspace))
        raise NotFound(
            f"no message template named {name!r} (looked for {name}{SUFFIX} in "
            f"{folders})",
            hint="`cxm templates list` shows the available templates",
        )
    source, path = files[name]
    return _parse_template_file(name, source, path)


def list_templates(workspace) -> list[TemplateInfo]:
    """Every template, sorted by name; a broken file is listed with its error."""
    infos: list[TemplateInfo] = []
    for name, (source, path) in sorted(_template_files(workspace).items()):
        try:
            template = _parse_template_file(name, source, path)
        except TemplateError as exc:
            infos.append(
                TemplateInfo(name, [], source, None, "", str(path), exc.message)
            )
            continue
        infos.append(
            TemplateInfo(
                name,
                template.channels,
                source,
                template.subject,
                template.description,
                str(path),
            )
        )
    return infos


_PARSED: dict[Path, tuple[tuple, MessageTemplate]] = {}


class _PinnedTemplates:
    """Templates read (and compiled) once for the length of one runner pass."""

    def __init__(self, root: str):
        self.root = root
        self.templates: dict[str, MessageTemplate] = {}
        self.compiled: dict[tuple[int, str], jinja2.Template] = {}


_PINNED = threading.local()


@contextlib.contextmanager
def pinned_templates(workspace) -> Iterator[None]:
    """Read each template file once while the block runs (a runner pass).

    Outside the block every render checks the files for changes, so an edit
    shows at once; a pass sending hundreds of texts does not need that per
    message, and an edit made during the pass is picked up by the next one.
    """
    # Limitation: a template edited while a long pass runs (thousands of due
    # steps) is picked up by the next pass, not by the rest of this one.
    previous = getattr(_PINNED, "current", None)
    if previous is not None and previous.root == str(workspace.root):
        yield
        return
    _PINNED.current = _PinnedTemplates(str(workspace.root))
    try:
        yield
    finally:
        _PINNED.current = previous


def _pinned(workspace) -> _PinnedTemplates | None:
    pinned = getattr(_PINNED, "current", None)
    if pinned is not None and pinned.root == str(workspace.root):
        return pinned
    return None


def _template_of(workspace, env, name: str) -> jinja2.Template:
    """``env.get_template(name)``, asked once per pinned pass."""
    pinned = _pinned(workspace)
    if pinned is None:
        return env.get_template(name)
    key = (id(env), name)
    compiled = pinned.compiled.get(key)
    if compiled is None:
        compiled = pinned.compiled[key] = env.get_template(name)
    return compiled


def _parse_template_file(name: str, source: str, path: Path) -> MessageTemplate:
    """Parse a template file, reusing the last parse while the file is unchanged.

    The parse is shared between callers, who only read it.
    """
    # The HTML part may appear or go without the main file changing.
    has_html = path.with_name(name + HTML_SUFFIX).is_file()
    stamp = (_file_stamp(path), has_html)
    cached = _PARSED.get(path)
    if cached is None or cached[0] != stamp or stamp[0] is None:
        cached = (stamp, _read_template_file(name, source, path))
        _PARSED[path] = cached
    return cached[1]


def _read_template_file(name: str, source: str, path: Path) -> MessageTemplate:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    text = text.replace("\r\n", "\n")

    meta: dict[str, Any] = {}
    body = text
    body_line = 1
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise TemplateError(f"{path}: front matter starts with --- but never ends")
        try:
            meta = yaml.safe_load("\n".join(lines[1:end])) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 2}" if mark is not None else ""
            raise TemplateError(
                f"{path}{where}: front matter is not valid YAML"
            ) from exc
        if not isinstance(meta, dict):
            raise TemplateError(f"{path}: front matter must be a mapping of settings")
        body = "\n".join(lines[end + 1 :])
        body_line = end + 2

    unknown = sorted(set(meta) - FRONT_MATTER_KEYS)
    if unknown:
        raise TemplateError(
            f"{path}: unknown front matter key(s) {', '.join(unknown)}",
            hint=f"known keys: {', '.join(sorted(FRONT_MATTER_KEYS))}",
        )

    channels = meta.get("channels", ["email", "sms"])
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, list) or not channels:
        raise TemplateError(f"{path}: channels must be a list such as [sms, email]")
    bad = [c for c in channels if c not in CHANNELS]
    if bad:
        raise TemplateError(
            f"{path}: unknown channel(s) {', '.join(map(str, bad))}",
            hint=f"channels are {', '.join(CHANNELS)}",
        )

    fallbacks = meta.get("fallbacks") or {}
    if not isinstance(fallbacks, dict):
        raise TemplateError(f"{path}: fallbacks must be a mapping (name: value)")
    subject = meta.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise TemplateError(f"{path}: subject must be text")
    if "email" in channels and not subject:
        raise TemplateError(f"{path}: an email template needs a subject")

    html_path = path.with_name(name + HTML_SUFFIX)
    return MessageTemplate(
        name=name,
        path=path,
        source=source,
        channels=list(channels),
        subject=subject,
        fallbacks={str(k): v for k, v in fallbacks.items()},
        description=str(meta.get("description") or ""),
        body=body,
        body_line=body_line,
        html_path=html_path if html_path.is_file() else None,
    )


# ---------------------------------------------------------------- rendering


class MissingValue(jinja2.StrictUndefined):
    """Fails when printed or used, but tests as false in ``{% if %}``."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    @property
    def _undefined_message(self) -> str:
        # Encoded so _run can name the variable (and the mapping it was read
        # from, such as business.phone) in the error it raises.
        if self._undefined_hint is None and isinstance(self._undefined_name, str):
            if self._undefined_obj is jinja2.utils.missing:
                return f"{_MISSING_MARK}::{self._undefined_name}"
            if isinstance(self._undefined_obj, dict):
                parent = id(self._undefined_obj)
                return f"{_MISSING_MARK}:{parent}:{self._undefined_name}"
        return super()._undefined_message


_MISSING_MARK = "cxm-missing"


class _Loader(jinja2.BaseLoader):
    """Loads a template's body, keeping the file's line numbers in errors."""

    def __init__(self, workspace):
        self.workspace = workspace

    def get_source(self, environment, template):
        if template.startswith("_"):
            return self._partial_source(template)
        html = template.endswith("#html")
        name = template.removesuffix("#html")
        try:
            message_template = load_template(self.workspace, name)
        except NotFound as exc:
            raise jinja2.TemplateNotFound(name) from exc
        if html:
            path = message_template.html_path
            if path is None:
                raise jinja2.TemplateNotFound(template)
            source = path.read_text(encoding="utf-8")
        else:
            path = message_template.path
            # Blank lines in place of the front matter keep line numbers true.
            source = "\n" * (message_template.body_line - 1) + message_template.body
        stamp = _file_stamp(path)
        main_path = message_template.path

        def uptodate() -> bool:
            # A workspace override added later must replace a cached shipped copy.
            current = _template_files(self.workspace).get(name)
            return (
                current is not None
                and current[1] == main_path
                and _file_stamp(path) == stamp
            )

        return source, str(path), uptodate

    def _partial_source(self, template: str):
        """A shared piece such as ``{% include "_signature.j2" %}``."""
        file_name = template if template.endswith(SUFFIX) else template + SUFFIX
        for _, folder in template_folders(self.workspace):
            path = folder / file_name
            if path.is_file() and path.parent == folder:
                stamp = _file_stamp(path)
                source = path.read_text(encoding="utf-8")
                return source, str(path), partial(_unchanged, path, stamp)
        raise jinja2.TemplateNotFound(template)


def _unchanged(path: Path, stamp: tuple[int, int] | None) -> bool:
    return _file_stamp(path) == stamp


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with each template's globals as one plain dict.

    Jinja chains a template's globals to the environment's so later changes
    to the environment show; cxm sets its globals before loading any
    template, and a plain dict makes each render's context copy several
    times cheaper (a runner renders one message per step).
    """

    def make_globals(self, d):
        return {**self.globals, **(d or {})}


_ENVIRONMENTS: dict[tuple[str, bool], ImmutableSandboxedEnvironment] = {}


def _environment(workspace, *, html: bool = False) -> ImmutableSandboxedEnvironment:
    key = (str(workspace.root), html)
    env = _ENVIRONMENTS.get(key)
    if env is None:
        env = _Environment(
            loader=_Loader(workspace),
            undefined=MissingValue,
            autoescape=html,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=True,
        )
        env.filters.update(_cxm_filters())
        _ENVIRONMENTS[key] = env
    return env


def build_context(
    workspace,
    db,
    contact: dict[str, Any],
    *,
    channel: str,
    extra: dict[str, Any] | None = None,
    fallbacks: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The variables a template sees, and which of them came from fallbacks.

    ``tags`` are the contact's tags when the caller read them already.
    """
    custom = contact.get("custom") or {}
    if isinstance(custom, str):
        from cxm_cli.store import loads

        custom = loads(custom, {})
    if tags is None:
        tags = _contact_tags(db, contact.get("id"))
    business = dict(workspace.config.get("business") or {})
    business.setdefault("name", workspace.business_name)

    context: dict[str, Any] = {}
    # Event data is more specific than a custom field from an old import, but
    # never replaces the contact's own name, email or phone.
    for key, value in custom.items():
        if str(key).isidentifier():
            context[str(key)] = value
    for key, value in (extra or {}).items():
        if str(key).isidentifier():
            context[str(key)] = value
    for key in _CONTACT_FIELDS:
        value = contact.get(key)
        # _blank inlined here and below: a runner builds a context per step.
        if value is not None and not (isinstance(value, str) and not value.strip()):
            context[key] = value
    context.update(
        {
            "contact_id": contact.get("id"),
            "custom": custom,
            "tags": tags,
            "business": business,
            "extra": dict(extra or {}),
            "channel": channel,
            "timezone": contact.get("timezone") or workspace.timezone,
        }
    )
    context = {
        k: v
        for k, v in context.items()
        if v is not None and not (isinstance(v, str) and not v.strip())
    }

    merged_fallbacks = {
        **(workspace.setting("templates.fallbacks", {}) or {}),
        **(fallbacks or {}),
    }
    used: list[str] = []
    for dotted, value in merged_fallbacks.items():
        if _apply_fallback(context, str(dotted), value):
            used.append(str(dotted))
    return context, used


_CONTACT_FIELDS = (
    "first_name",
    "last_name",
    "display_name",
    "email",
    "phone",
    "company",
    "source",
)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _apply_fallback(context: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set ``a.b`` in the context unless it already holds a value."""
    parts = dotted.split(".")
    node = context
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    if _blank(node.get(parts[-1])):
        node[parts[-1]] = value
        return True
    return False


def _contact_tags(db, contact_id: int | None) -> list[str]:
    if db is None or contact_id is None:
        return []
    return [
        row[0]
        for row in db.execute(
            "SELECT tag FROM contact_tags WHERE contact_id = ? ORDER BY tag",
            [contact_id],
        ).fetchall()
    ]


def render_message(
    workspace,
    db,
    template_name: str,
    contact: dict[str, Any],
    *,
    channel: str,
    extra: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> RenderedMessage:
    """Render a template for one contact on one channel."""
    template = load_template(workspace, template_name)
    if channel not in template.channels:
        raise TemplateError(
            f"template {template_name!r} is for {', '.join(template.channels)}, "
            f"not {channel} ({template.path})"
        )
    context, used = build_context(
        workspace,
        db,
        contact,
        channel=channel,
        extra=extra,
        fallbacks=template.fallbacks,
        tags=tags,
    )
    env = _environment(workspace)

    body = _run(
        template_name,
        contact,
        lambda: _template_of(workspace, env, template_name).render(context),
        context=context,
    ).strip()
    subject = None
    if channel == "email":
        subject = _run(
            template_name,
            contact,
            lambda: _compiled(env, template.subject or "").render(context),
            part="subject",
            context=context,
        )
        subject = " ".join(subject.split())
    html_body = None
    if channel == "email" and template.html_path is not None:
        html_env = _environment(workspace, html=True)
        html_body = _run(
            template_name,
            contact,
            lambda: _template_of(workspace, html_env, template_name + "#html").render(
                context
            ),
            part="HTML part",
            context=context,
        )

    if not body:
        raise TemplateError(
            f"template {template_name!r} rendered an empty message for contact "
            f"{contact.get('id')} ({template.path})"
        )
    log.debug(
        "rendered %s for contact %s on %s", template_name, contact.get("id"), channel
    )
    referenced = _referenced_names(env, template)
    return RenderedMessage(
        subject=subject,
        body=body,
        html_body=html_body,
        template=template_name,
        channel=channel,
        # Workspace-wide fallbacks fill every context; only those the template
        # reads were used.
        fallbacks_used=[name for name in used if name.split(".")[0] in referenced],
    )


_REFERENCED: dict[tuple[int, str, str], frozenset[str]] = {}


def _referenced_names(env, template: MessageTemplate) -> frozenset[str]:
    """The top-level variables a template's body and subject read."""
    # Limitation: a variable only the HTML part of an email reads is not
    # counted, so a fallback used for it alone goes unreported.
    source = template.body + "\n" + (template.subject or "")
    key = (id(env), template.name, source)
    names = _REFERENCED.get(key)
    if names is None:
        if len(_REFERENCED) > 512:
            _REFERENCED.clear()
        try:
            names = frozenset(meta.find_undeclared_variables(env.parse(source)))
        except jinja2.TemplateSyntaxError:
            names = frozenset()
        _REFERENCED[key] = names
    return names


_SYNTAX: jinja2.Environment | None = None


def syntax_problem(source: str) -> str | None:
    """What is wrong with a text's template syntax, or None; for checking a
    sequence's inline texts before any contact is rendered.

    Compiled, not only parsed, with cxm's filters: an unknown filter
    (``{{ name | upperr }}``) is found here rather than at every send.
    """
    global _SYNTAX
    if _SYNTAX is None:
        _SYNTAX = ImmutableSandboxedEnvironment()
        _SYNTAX.filters.update(_cxm_filters())
    try:
        _SYNTAX.compile(source)
    except jinja2.TemplateAssertionError as exc:
        return f"template error on its line {exc.lineno}: {exc.message}"
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on its line {exc.lineno}: {exc.message}"
    return None


def render_text(
    workspace,
    text: str,
    contact: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
    channel: str = "sms",
    db=None,
    fallbacks: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> str:
    """Render text typed by staff (a reply, a snippet) with the same rules."""
    context, _ = build_context(
        workspace,
        db,
        contact,
        channel=channel,
        extra=extra,
        fallbacks=fallbacks,
        tags=tags,
    )
    env = _environment(workspace)
    return _run(
        TEXT_NAME,
        contact,
        lambda: _compiled(env, text).render(context),
        context=context,
    ).strip()


_COMPILED: dict[tuple[int, str], jinja2.Template] = {}


def _compiled(env, source: str) -> jinja2.Template:
    """Compile a short template (a subject, a reply) once per environment."""
    key = (id(env), source)
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) > 512:
            _COMPILED.clear()
        compiled = _COMPILED[key] = env.from_string(source)
    return compiled


def _missing_variable_name(message: str, context: dict[str, Any]) -> str:
    _, parent, name = message.split(":", 2)
    if not parent:
        return name
    for key, value in context.items():
        if id(value) == int(parent):
            return f"{key}.{name}"
    return name


def _run(
    template_name: str,
    contact: dict[str, Any],
    render,
    *,
    part: str = "",
    context: dict[str, Any] | None = None,
):
    where = f"template {template_name!r}" + (f" ({part})" if part else "")
    try:
        return render()
    except jinja2.TemplateSyntaxError as exc:
        location = f"{exc.filename or where}, line {exc.lineno}"
        raise TemplateError(f"{location}: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{where} tried something unsafe: {exc}") from exc
    except jinja2.UndefinedError as exc:
        message = str(exc)
        if message.startswith(_MISSING_MARK + ":"):
            variable = _missing_variable_name(message, context or {})
            raise TemplateError(
                f"{where} needs {{{{ {variable} }}}}, but contact "
                f"{contact.get('id')} has no {variable} and the template has no "
                f"fallback for it",
                hint=f"add it under `fallbacks:` in the template, e.g. "
                f'{variable}: "..."',
            ) from exc
        raise TemplateError(f"{where}: {message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"{where} includes {exc.name!r}, which does not exist"
        ) from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError(f"{where} failed: {exc}") from exc
    except jinja2.TemplateError as exc:
        # What is left is found only while rendering (an unknown test, such as
        # `is divisible_byy`): the template's fault, not a crash of cxm.
        raise TemplateError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------- filters


def _as_local(value: Any, zone: str) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = clocks.parse(value)
        except ValueError:
            return None
    else:
        return None
    try:
        return moment.astimezone(ZoneInfo(zone))
    except ZoneInfoNotFoundError:
        return moment


def _in_contact_zone(context, value: Any, spell: Callable[[datetime], str]) -> str:
    """``spell`` the moment in the contact's zone; text that is no moment as is."""
    local = _as_local(value, context.get("timezone") or "UTC")
    if local is None:
        return str(value)
    return spell(local)


def _cxm_filters() -> dict[str, Any]:
    """The filters cxm adds to Jinja's, for rendering and for checking."""
    return {
        "when": _filter_when,
        "day": _filter_day,
        "time_of_day": _filter_time_of_day,
    }


@jinja2.pass_context
def _filter_when(context, value: Any) -> str:
    """``Tue, Mar 3 at 2:30 PM`` in the contact's zone; other text unchanged."""
    return _in_contact_zone(
        context,
        value,
        lambda local: f"{local:%a, %b} {local.day} at {_clock_time(local)}",
    )


@jinja2.pass_context
def _filter_day(context, value: Any) -> str:
    """``Tuesday, March 3`` in the contact's zone; other text unchanged."""
    return _in_contact_zone(context, value, lambda local: f"{local:%A, %B} {local.day}")


@jinja2.pass_context
def _filter_time_of_day(context, value: Any) -> str:
    """``2:30 PM`` in the contact's zone; other text unchanged."""
    return _in_contact_zone(context, value, _clock_time)


def _clock_time(local: datetime) -> str:
    hour = local.hour % 12 or 12
    return f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def copy_template(workspace, name: str) -> Path:
    """Copy a shipped template (and its HTML part) into the workspace to edit."""
    import shutil

    shipped = SHIPPED_TEMPLATES_DIR / f"{name}{SUFFIX}"
    if not shipped.is_file():
        raise NotFound(
            f"no shipped template named {name!r} in {SHIPPED_TEMPLATES_DIR}",
            hint="`cxm templates list` shows the shipped templates",
        )
    target = workspace.templates_dir / shipped.name
    if target.exists():
        raise TemplateError(f"{target} already exists; edit it directly")
    workspace.templates_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, target)
    html = SHIPPED_TEMPLATES_DIR / f"{name}{HTML_SUFFIX}"
    if html.is_file():
        shutil.copyfile(html, workspace.templates_dir / html.name)
    return target
