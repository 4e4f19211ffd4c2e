"""Reading export files: encodings, CSV dialects, JSON Lines, one record at a time.

Input is never read whole into memory. Standard input is first copied to a
temporary file, because detecting the encoding and inferring date orders need
a second look at the data, which a pipe cannot give.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charset_normalizer import from_bytes

from cxm_cli.errors import InputError

log = logging.getLogger(__name__)

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
DELIMITER_NAMES = {
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "\\t": "\t",
    "pipe": "|",
    ",": ",",
    ";": ";",
    "|": "|",
    "\t": "\t",
}
SAMPLE_BYTES = 256 * 1024
# A field longer than this is almost always an unclosed quote swallowing rows.
FIELD_LIMIT = 1024 * 1024

csv.field_size_limit(FIELD_LIMIT)


@dataclass
class InputFile:
    """A file to read: the user's file, or a spooled copy of standard input."""

    path: Path
    name: str  # how messages name it: the path as given, or "stdin"
    is_stdin: bool
    size: int


@contextlib.contextmanager
def open_input(source) -> Iterator[InputFile]:
    """Yield an :class:`InputFile` for a path, ``-`` (stdin) or a stream."""
    if isinstance(source, str | os.PathLike) and str(source) != "-":
        path = Path(source).expanduser()
        if path.is_dir():
            raise InputError(
                f"{path}: is a folder, not a file",
                hint="name one export file in it, e.g. cxm leads import "
                f"{path / 'contacts.csv'}",
            )
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        yield InputFile(path, str(source), False, path.stat().st_size)
        return

    stream = sys.stdin if str(source) == "-" else source
    binary: BinaryIO = getattr(stream, "buffer", stream)
    spool = tempfile.NamedTemporaryFile(
        prefix="cxm-import-", suffix=".spool", delete=False
    )
    try:
        with spool:
            if isinstance(binary, io.TextIOBase):
                for chunk in iter(lambda: binary.read(1 << 16), ""):
                    spool.write(chunk.encode("utf-8"))
            else:
                shutil.copyfileobj(binary, spool, 1 << 20)
        path = Path(spool.name)
        yield InputFile(path, "stdin", True, path.stat().st_size)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool.name)


# ---------------------------------------------------------------- encodings


def detect_encoding(
    path: Path, override: str | None = None, *, name: str | None = None
) -> str:
    """A Python codec name for the file: BOM first, then UTF-8, then a detector.

    An ``override`` is checked against the whole file first, so a wrong
    ``--encoding`` is one clear error before anything is read or imported.
    """
    if override:
        try:
            encoding = codecs.lookup(override).name
        except LookupError:
            raise InputError(
                f"--encoding {override!r} is not a known encoding"
            ) from None
        found = undecodable_line(path, encoding)
        if found is not None:
            line, reason = found
            raise InputError(
                f"{name or path.name}: not valid {encoding} on line {line} "
                f"({reason}); --encoding {override} does not fit this file",
                hint="leave out --encoding to detect it, or name the real one",
            )
        return encoding

    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if not head:
        return "utf-8"

    guess = _utf16_without_bom(head)
    if guess:
        return guess

    failure = _first_invalid_utf8(path)
    if failure is None:
        return "utf-8"
    return _detect_single_byte(path, head, failure)


def _utf16_without_bom(head: bytes) -> str | None:
    sample = head[:4096]
    if len(sample) < 4 or sample.count(0) < len(sample) // 4:
        return None
    odd_nuls = sample[1::2].count(0)
    even_nuls = sample[0::2].count(0)
    if odd_nuls > even_nuls * 4:
        return "utf-16-le"
    if even_nuls > odd_nuls * 4:
        return "utf-16-be"
    return None


def undecodable_line(path: Path, encoding: str) -> tuple[int, str] | None:
    """The first line (from 1) the encoding cannot read, with why; None if all can.

    Fed line by line so the line number is exact; the decoder keeps any
    character split across lines (UTF-16's newline is two bytes).
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as handle:
        for raw in handle:
            try:
                text = decoder.decode(raw)
            except UnicodeError as exc:
                return line, _decode_reason(exc)
            line += text.count("\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError as exc:
            return line, _decode_reason(exc)
    return None


def _decode_reason(exc: UnicodeError) -> str:
    # A missing UTF-16/32 byte-order mark is a bare UnicodeError with no reason.
    return exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)


def _first_invalid_utf8(path: Path) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence, or None when valid."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset
    return None


def _detect_single_byte(path: Path, head: bytes, failure: int) -> str:
    """Ask charset-normalizer, preferring Windows-1252 among equal candidates.

    Excel on Western Windows writes Windows-1252; the detector often ranks a
    sibling code page (cp1250) equal or first on short name lists, and those
    turn ``ñ`` into ``ń``.
    """
    with path.open("rb") as handle:
        handle.seek(max(0, failure - 32 * 1024))
        window = handle.read(64 * 1024)
    sample = head[: SAMPLE_BYTES // 2] + b"\n" + window
    matches = list(from_bytes(sample))
    if not matches:
        raise InputError(
            f"{path.name}: cannot tell the text encoding",
            hint="pass --encoding, e.g. --encoding cp1252",
        )
    lowest_chaos = min(match.chaos for match in matches)
    for match in matches:
        if match.chaos == lowest_chaos and "cp1252" in match.could_be_from_charset:
            return "cp1252"
    return codecs.lookup(matches[0].encoding).name


# ---------------------------------------------------------------- CSV


def detect_delimiter(path: Path, encoding: str, override: str | None = None) -> str:
    if override:
        delimiter = DELIMITER_NAMES.get(override, DELIMITER_NAMES.get(override.lower()))
        if delimiter is None:
            if len(override) == 1:
                return override
            raise InputError(
                f"--delimiter {override!r}: "
                "use comma, semicolon, tab, pipe or one character"
            )
        return delimiter

    with path.open(encoding=encoding, newline="", errors="replace") as handle:
        text = handle.read(64 * 1024)
    header = _first_line(text)
    counts = {d: _count_outside_quotes(header, d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _first_line(text: str) -> str:
    in_quotes = False
    for index, char in enumerate(text):
        if char == '"':
            in_quotes = not in_quotes
        elif char in "\r\n" and not in_quotes:
            return text[:index]
    return text


def _count_outside_quotes(line: str, delimiter: str) -> int:
    count, in_quotes = 0, False
    for char in line:
        if char == '"':
            in_quotes = not in_quotes
        elif char == delimiter and not in_quotes:
            count += 1
    return count


class BrokenRecord(list):
    """The cells of a record the reader had to give up on, with the reason.

    Only the record's first line is kept: the lines a stray quote swallowed
    are read again as records of their own.
    """

    def __init__(self, cells: list[str], column: int, reason: str):
        super().__init__(cells)
        self.column = column
        self.reason = reason


class _Lines:
    """Physical lines for ``csv.reader``, remembering those of the current record.

    Lines can be put back, so the lines an unclosed quote swallowed are read
    again as records.
    """

    def __init__(self, handle):
        self._handle = handle
        self._pending: deque[str] = deque()
        self.taken: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._pending.popleft() if self._pending else next(self._handle)
        self.taken.append(line)
        return line

    def take(self) -> list[str]:
        taken, self.taken = self.taken, []
        return taken

    def put_back(self, lines: list[str]) -> None:
        self._pending.extendleft(reversed(lines))


class StreamedRecords:
    """A file read record by record; ``position()`` is the byte offset read so
    far, for progress bars (0 before reading starts or where it cannot tell).

    Subclasses keep the open text handle in ``self._handle`` while they read.
    """

    def __init__(self, path: Path, encoding: str, name: str):
        self.path = path
        self.encoding = encoding
        self.name = name
        self._handle = None

    def position(self) -> int:
        if self._handle is None:
            return 0
        try:
            return self._handle.buffer.tell()
        except (OSError, ValueError):
            return 0


class CsvRecords(StreamedRecords):
    """Header and numbered records of a delimited file, streamed.

    ``number`` is the record's position after the header (a quoted field that
    spans lines is still one record); ``position()`` is the byte offset read so
    far, for progress bars. A record whose quote is never closed properly is
    yielded as a :class:`BrokenRecord` made of its first line, and the lines
    the quote swallowed are read again as records, so no row is lost.
    """

    def __init__(self, path: Path, encoding: str, delimiter: str, name: str):
        super().__init__(path, encoding, name)
        self.delimiter = delimiter

    def header(self) -> list[str]:
        for _, row in self._iterate(header_only=True):
            return row
        return []

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self._iterate(header_only=False)

    def _iterate(self, *, header_only: bool) -> Iterator[tuple[int, list[str]]]:
        with self.path.open(encoding=self.encoding, newline="") as handle:
            self._handle = handle
            lines = _Lines(handle)
            reader = csv.reader(lines, delimiter=self.delimiter)
            number = -1
            columns = 0
            try:
                while True:
                    broken = None
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        taken = lines.take()
                        if len(taken) < 2 or number < 0:
                            raise InputError(
                                f"{self.name}: line {reader.line_num}: {exc}",
                                hint="nothing was imported",
                            ) from None
                        broken = _quote_trouble(taken, self.delimiter, columns, True)
                    else:
                        taken = lines.take()
                        if number >= 0 and len(taken) > 1:
                            broken = _quote_trouble(taken, self.delimiter, columns)
                    number += 1

                    if number == 0:
                        row = [cell.replace("\ufeff", "").strip() for cell in row]
                        columns = len(row)
                        if header_only:
                            yield 0, row
                            return
                        continue
                    if broken is not None:
                        lines.put_back(taken[1:])
                        yield number, self._first_line_cells(taken[0], broken)
                        continue
                    yield number, row
            except UnicodeError as exc:
                # The text layer decodes ahead in blocks, so the record being
                # read says little about where the bad bytes are: find the line.
                found = undecodable_line(self.path, self.encoding)
                line, reason = found or (max(number + 1, 1), _decode_reason(exc))
                raise InputError(
                    f"{self.name}: not valid {self.encoding} on line {line} ({reason})",
                    hint="pass --encoding with the file's real encoding",
                ) from None
            finally:
                self._handle = None

    def _first_line_cells(self, line: str, column: int) -> BrokenRecord:
        cells = next(csv.reader([line], delimiter=self.delimiter), [])
        cells = [cell.rstrip("\r\n") for cell in cells]
        return BrokenRecord(cells, column, "unclosed quote")


_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)
_EMAIL_LIKE = re.compile(r"[^\s@,;]+@[^\s@,;]+\.[A-Za-z]{2,}")
_PHONE_LIKE = re.compile(r"\d(?:[\s().-]*\d){6}")


def _quote_trouble(
    taken: list[str], delimiter: str, columns: int, too_long: bool = False
) -> int | None:
    """Index of the column whose quote swallowed the lines after it, or None.

    A quote swallowed lines when it is still open at the end of the file (or
    the field grew past the size limit), when it "closes" in the middle of a
    later value (the opening quote of some later row), or when a line it
    swallowed looks like a whole record of this file: the header's number of
    columns and an email in it (or two such lines with a phone).

    Limitation: a quoted multi-line note one of whose lines happens to look
    like a whole record (same number of delimiters and an email, or two lines
    with a phone) is read as an unclosed quote; its record is rejected and the
    note's lines are read as records (each then imported or rejected, never
    lost).
    """
    state, column, quoted_column, spans = _START, 0, 0, False
    for char in "".join(taken):
        if state == _START:
            if char == '"':
                state, quoted_column, spans = _QUOTED, column, False
            elif char == delimiter:
                column += 1
            elif char not in "\r\n":
                state = _FIELD
        elif state == _FIELD:
            if char == delimiter:
                state, column = _START, column + 1
        elif state == _QUOTED:
            if char == '"':
                state = _QUOTE_IN_QUOTED
            elif char in "\r\n":
                spans = True
        elif char == '"':
            state = _QUOTED
        elif char == delimiter:
            state, column = _START, column + 1
        elif char in "\r\n":
            state = _START
        else:
            if spans:
                return quoted_column
            state = _FIELD
    if too_long or state == _QUOTED:
        return quoted_column

    if columns < 3:
        return None
    with_phone = with_email = 0
    for line in taken[1:]:
        if _count_outside_quotes(line, delimiter) != columns - 1:
            continue
        if _EMAIL_LIKE.search(line):
            with_email += 1
        elif _PHONE_LIKE.search(line):
            with_phone += 1
    # A note may hold one line with a phone and some commas; a swallowed row
    # with an email, or several with phones, is no note.
    if with_email or with_phone >= 2:
        return quoted_column
    return None


def is_blank(row: list[str]) -> bool:
    """A blank line or a line of delimiters only (skipped, never rejected)."""
    return not any(cell.strip() for cell in row)


# ---------------------------------------------------------------- JSON Lines


class JsonLinesRecords(StreamedRecords):
    """One JSON object per line; keys play the part of CSV headers."""

    def __iter__(self) -> Iterator[tuple[int, list | None, str, str | None]]:
        """(line number, key/value pairs or None, raw line, why unreadable)."""
        with self.path.open(encoding=self.encoding) as handle:
            self._handle = handle
            for number, line in enumerate(handle, 1):
                text = line.strip()
                if not text:
                    yield number, [], text, None
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield (
                        number,
                        None,
                        text,
                        f"malformed line: not valid JSON ({exc.msg})",
                    )
                    continue
                if not isinstance(value, dict):
                    yield number, None, text, "malformed line: not a JSON object"
                    continue
                yield number, list(_flatten(value)), text, None
            self._handle = None


def _flatten(value: dict) -> Iterator[tuple[str, str]]:
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, list):
            for element in item:
                if isinstance(element, dict | list):
                    yield str(key), json.dumps(element, ensure_ascii=False)
                elif element is not None:
                    yield str(key), _text(element)
        elif isinstance(item, dict):
            yield str(key), json.dumps(item, ensure_ascii=False)
        else:
            yield str(key), _text(item)


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
