"""Writing a report or export to a file the user named on the command line.

A missing folder or a read-only place is the user's to fix, so it becomes one
clear error naming the path instead of a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from cxm_cli.errors import InputError


def check_writable(path: Path, option: str = "--out") -> None:
    """Refuse a path whose folder is missing, before any slow work is done."""
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
def open_for_writing(path: Path, option: str = "--out") -> Iterator[TextIO]:
    check_writable(path, option)
    try:
        handle = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write ({exc.strerror})") from exc
    with handle:
        yield handle


def write_text_file(path: Path, text: str, option: str = "--out") -> None:
    with open_for_writing(path, option) as handle:
        handle.write(text)
