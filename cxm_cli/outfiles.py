"""Writing a report or export to a file the user named on the command line.

A missing folder or a read-only place is the user's to fix, so it becomes one
clear error naming the path instead of a traceback.

Every output file (``--out``, ``--output``, ``--rejects``) is checked here
against the workspace's own files first: a report written over ``data/cxm.db``
or ``cxm.toml`` would destroy the business's records or settings, and no
command ever has a reason to do that.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from cxm_cli.errors import InputError

CONFIG_NAME = "cxm.toml"  # as cxm_cli.workspace, which imports too much for here

# What a workspace keeps for itself, relative to its root, and what to call
# it. The SQLite sidecars count as the database: a file written in their
# place is read back as part of it on the next open.
OWN_FILES = {
    CONFIG_NAME: "settings",
    ".env": "secrets file",
    "data/cxm.db": "database",
    "data/cxm.db-wal": "database (its write-ahead log)",
    "data/cxm.db-shm": "database (its shared-memory index)",
    "data/cxm.db-journal": "database (its rollback journal)",
    "data/secret_key": "key that signs its links",
}
OWN_FOLDERS = {
    "sequences": "sequences",
    "templates": "templates",
    "data/outbox": "outbox (the record of sent messages)",
}


def workspace_file_at(path: Path, workspace_root: Path | None = None) -> str | None:
    """Which of a workspace's own files writing ``path`` would replace, as
    "the workspace's own database (data/cxm.db)", or None when none.

    The path is compared with symbolic links followed, against the workspace
    given and against any workspace around the path itself (a folder holding a
    ``cxm.toml``), so a link to the database or a path through a linked folder
    is caught too. An existing file is also compared by identity, which
    catches a hard link to one of them.
    """
    target = Path(os.path.abspath(path)).resolve()
    roots = _workspace_roots(target, workspace_root)

    for root in roots:
        if target == root or root not in target.parents:
            continue
        relative = target.relative_to(root)
        what = _own_part(relative)
        if what:
            return f"{what} ({relative.as_posix()})"

    if not target.is_file():
        return None
    linked = target.stat().st_nlink > 1
    for root in roots:
        for own in _existing_own_files(root, linked=linked):
            with contextlib.suppress(OSError):
                if os.path.samefile(target, own):
                    relative = own.relative_to(root)
                    return f"{_own_part(relative)} ({relative.as_posix()})"
    return None


def refuse_workspace_file(
    path: Path, label: str, workspace_root: Path | None = None
) -> None:
    """Raise one clear error, before anything is written, when ``path`` is
    one of the workspace's own files; ``label`` starts the message."""
    own = workspace_file_at(path, workspace_root)
    if own:
        raise InputError(
            f"{label}: it is {own}; cxm never writes an output there",
            hint="choose another file: cxm.toml, .env, data/cxm.db (and its "
            "-wal, -shm, -journal), data/secret_key and all of sequences/, "
            "templates/ and data/outbox/ are the workspace's own",
        )


def check_writable(
    path: Path, option: str = "--out", workspace_root: Path | None = None
) -> None:
    """Refuse a path that is the workspace's own, a symbolic link, or whose
    folder is missing, before any slow work is done."""
    refuse_workspace_file(path, f"{option} {path}", workspace_root)
    if path.is_symlink():
        # As for --rejects: what a link points to is not what the user named.
        raise InputError(
            f"{option} {path}: it is a symbolic link",
            hint="name the file it points to, or another file",
        )
    folder = path.parent
    if not folder.exists():
        raise InputError(
            f"{option} {path}: the folder {folder} does not exist",
            hint="create it first or choose another path",
        )
    if not folder.is_dir():
        raise InputError(f"{option} {path}: {folder} is not a folder")
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; name a file inside it")


@contextlib.contextmanager
def open_for_writing(
    path: Path, option: str = "--out", workspace_root: Path | None = None
) -> Iterator[TextIO]:
    check_writable(path, option, workspace_root)
    # A link put in place after the check is not followed either.
    # Limitation: a folder swapped for a link to data/ between the check and
    # the open is still followed; only the file name itself is held.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        handle = os.fdopen(
            os.open(path, flags, 0o666), "w", encoding="utf-8", newline=""
        )
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write ({exc.strerror})") from exc
    with handle:
        yield handle


def write_text_file(
    path: Path, text: str, option: str = "--out", workspace_root: Path | None = None
) -> None:
    with open_for_writing(path, option, workspace_root) as handle:
        handle.write(text)


def _workspace_roots(target: Path, given: Path | None) -> list[Path]:
    roots = [Path(given).resolve()] if given is not None else []
    for folder in target.parents:
        if (folder / CONFIG_NAME).is_file() and folder not in roots:
            roots.append(folder)
    return roots


def _own_part(relative: Path) -> str | None:
    # Compared case-blind: on a case-insensitive disk data/CXM.DB is the file.
    key = relative.as_posix().casefold()
    for name, what in OWN_FILES.items():
        if key == name.casefold():
            return f"the workspace's own {what}"
    for name, what in OWN_FOLDERS.items():
        if key == name or key.startswith(name + "/"):
            return f"in the workspace's own {what} folder"
    return None


def _existing_own_files(root: Path, *, linked: bool) -> Iterator[Path]:
    for name in OWN_FILES:
        own = root / name
        if own.is_file():
            yield own
    if not linked:
        return  # a file with one name cannot also be one in the folders
    for name in OWN_FOLDERS:
        folder = root / name
        if folder.is_dir():
            yield from (p for p in folder.rglob("*") if p.is_file())
