"""Finding a workspace, reading its settings, and creating a new one.

A workspace is one business: a folder with ``cxm.toml``, an optional ``.env``,
``sequences/``, optional template overrides in ``templates/``, and
``data/cxm.db``. Everything cxm keeps for that business lives under the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from cxm_cli.errors import ConfigError, CxmError, WorkspaceNotFound

log = logging.getLogger(__name__)

CONFIG_NAME = "cxm.toml"
ENV_VARIABLE = "CXM_WORKSPACE"
PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "workspace_template"
# Limitation: the shipped sequences live at the top of the source tree, so cxm
# must be installed from a checkout (``pip install -e .``, as the Makefile does);
# a wheel-only install has no default sequences for ``cxm init`` to copy.
SHIPPED_SEQUENCES_DIR = PACKAGE_DIR.parent / "sequences"


@dataclass
class Workspace:
    root: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cxm.db"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def sequences_dir(self) -> Path:
        return self.root / "sequences"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def setting(self, dotted: str, default: Any = None) -> Any:
        """Read ``section.key`` from cxm.toml, or ``default`` when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def secret(self, variable: str | None) -> str | None:
        """Value of an environment variable, from the process first, then .env."""
        if not variable:
            return None
        return os.environ.get(variable) or self.env.get(variable) or None

    @property
    def business_name(self) -> str:
        return str(self.setting("business.name", "Our business"))

    @property
    def timezone(self) -> str:
        return str(self.setting("business.timezone", "UTC"))

    @property
    def phone_region(self) -> str:
        return str(self.setting("business.phone_region", "US")).upper()

    def open_db(self):
        """Open (creating and migrating on first use) the workspace database."""
        from cxm_cli.store import open_database

        db = open_database(self.db_path)
        _WORKSPACES_BY_DB[str(self.db_path.resolve())] = self
        return db


def load_workspace(root: Path) -> Workspace:
    config_path = root / CONFIG_NAME
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise WorkspaceNotFound(
            f"{root} is not a cxm workspace (no {CONFIG_NAME})",
            hint=f"create one with: cxm init {root}",
        ) from exc

    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc

    check_core_settings(config, config_path)

    env_path = root / ".env"
    env = {k: v for k, v in dotenv_values(env_path).items() if v is not None}
    log.debug("loaded workspace %s (%d .env values)", root, len(env))
    return Workspace(root=root.resolve(), config=config, env=env)


def check_core_settings(config: dict[str, Any], config_path: Path) -> None:
    """Refuse settings every command depends on when they cannot work.

    A wrong time zone or quiet-hours window would otherwise surface only when
    the runner tries to send, after steps were already claimed.
    """
    import phonenumbers

    from cxm_cli.waits import parse_time_of_day

    def problem(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(
            f"{config_path}: {key} = {value!r} is not valid",
            hint=f"expected {expected}",
        )

    business = config.get("business", {}) or {}
    zone = business.get("timezone", "UTC")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise problem(
            "business.timezone", zone, "an IANA zone such as America/Chicago"
        ) from exc

    region = str(business.get("phone_region", "US")).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise problem("business.phone_region", region, "a two-letter region such as US")

    quiet_hours = config.get("quiet_hours", {}) or {}
    for key in ("start", "end"):
        value = quiet_hours.get(key)
        try:
            if value is not None:
                parse_time_of_day(value)
        except ValueError as exc:
            raise problem(
                f"quiet_hours.{key}", value, 'a 24-hour time such as "08:00"'
            ) from exc

    for section in ("caps", "rate_limits"):
        for key, value in (config.get(section, {}) or {}).items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
            ):
                raise problem(f"{section}.{key}", value, "a number, 0 or more")


def find_workspace(explicit: Path | str | None = None) -> Workspace:
    """Locate the workspace from ``--workspace``, ``CXM_WORKSPACE`` or the cwd.

    From the current folder cxm looks upwards, as git does, so commands work
    from any folder inside a workspace.
    """
    if explicit:
        return load_workspace(Path(explicit).expanduser())

    from_env = os.environ.get(ENV_VARIABLE)
    if from_env:
        return load_workspace(Path(from_env).expanduser())

    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_NAME).is_file():
            return load_workspace(candidate)

    raise WorkspaceNotFound(
        f"no cxm workspace in {here} or its parents",
        hint=f"run `cxm init` here, pass --workspace DIR, or set {ENV_VARIABLE}",
    )


def business_name_from_folder(folder: Path) -> str:
    """``~/clients/bright-smile`` -> "Bright Smile": a better default than none."""
    stem = Path(folder).expanduser().resolve().name
    words = stem.replace("-", " ").replace("_", " ").split()
    return " ".join(word.capitalize() for word in words) or "Our business"


@dataclass
class InitResult:
    root: Path
    created: list[str]


def init_workspace(
    root: Path,
    *,
    business_name: str = "Our business",
    timezone: str = "America/Chicago",
    phone_region: str = "US",
) -> InitResult:
    """Create a workspace folder; refuse to overwrite an existing one."""
    root = root.expanduser()
    if (root / CONFIG_NAME).exists():
        raise CxmError(
            f"{root / CONFIG_NAME} already exists",
            hint="pick another folder, or edit the existing cxm.toml",
        )

    root.mkdir(parents=True, exist_ok=True)
    created: list[str] = []

    config_text = (TEMPLATE_DIR / "cxm.toml").read_text(encoding="utf-8")
    config_text = (
        config_text.replace("{business_name}", business_name.replace('"', "'"))
        .replace("{timezone}", timezone)
        .replace("{phone_region}", phone_region.upper())
    )
    (root / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    created.append(CONFIG_NAME)

    shutil.copyfile(TEMPLATE_DIR / "env.example", root / ".env.example")
    created.append(".env.example")

    sequences_dir = root / "sequences"
    sequences_dir.mkdir(exist_ok=True)
    for source in sorted(SHIPPED_SEQUENCES_DIR.glob("*.y*ml")):
        shutil.copyfile(source, sequences_dir / source.name)
        created.append(f"sequences/{source.name}")

    (root / "data").mkdir(exist_ok=True)
    workspace = load_workspace(root)
    workspace.open_db().close()
    created.append("data/cxm.db")
    return InitResult(root=workspace.root, created=created)


_WORKSPACES_BY_DB: dict[str, Workspace] = {}
# The file behind each open connection: every hook of every event asks, and a
# connection never changes its main file.
_DB_FILES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def workspace_of(db) -> Workspace:
    """The workspace a database file belongs to (``<root>/data/cxm.db``).

    Event hooks receive only the database; sequences, templates and settings
    they need come from the workspace around that file.
    """
    db_file = _DB_FILES.get(db)
    if db_file is None:
        row = db.execute("PRAGMA database_list").fetchone()
        db_file = _DB_FILES[db] = row[2] if row else ""
    if not db_file:
        raise CxmError("this database is not inside a cxm workspace (in memory)")
    cached = _WORKSPACES_BY_DB.get(db_file)
    if cached is None:
        cached = load_workspace(Path(db_file).parent.parent)
        _WORKSPACES_BY_DB[db_file] = cached
    return cached
