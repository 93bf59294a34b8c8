"""Rows of an uploaded CSV or XLSX file, read as a stream, with plain messages for bad files.

Nothing here holds the whole file: CSV is decoded line by line (each line at most
MAX_LINE_CHARS), XLSX is read by openpyxl in read-only mode, one row at a time.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

from mappings.csv_cells import unescape_cell

NOT_UTF8 = "{file} is not UTF-8: save it as UTF-8 (e.g. “CSV UTF-8” in a spreadsheet) and retry."
EMPTY_FILE = "{file} is empty: it needs a header row and at least the columns {columns}."
NOT_CSV = "{file} is not a readable CSV file (line {line}: {reason})."
LINE_TOO_LONG = (
    "{file}: line {line} is longer than {limit:,} characters; this is not a file to import."
)
NOT_XLSX = "{file} is not a readable XLSX workbook ({reason})."
XLSX_NO_SHEET = "{file} has no worksheet."
XLSX_TOO_LARGE = (
    "{file} expands to more than {limit:,} MB (or its text table to more than {strings:,} MB): "
    "this is not a workbook to import."
)
MISSING_COLUMNS = "The file lacks the column(s): {columns}."
UNKNOWN_COLUMNS = (
    "The file has column(s) this import does not know: {columns} (allowed: {allowed})."
)
DUPLICATE_COLUMNS = "The file has the column(s) {columns} more than once."

MAX_LINE_CHARS = 1_000_000
MAX_XLSX_EXPANDED = 1024 * 2**20
MAX_XLSX_STRINGS = 100 * 2**20
CHUNK_ROWS = 1000
XLSX_MAGIC = b"PK\x03\x04"


class TableError(Exception):
    """The file as a whole cannot be read; the message says why, for a person."""


@dataclass(frozen=True)
class Columns:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def allowed(self) -> tuple[str, ...]:
        return self.required + self.optional


def is_xlsx(*, source: BinaryIO, name: str) -> bool:
    """XLSX by the zip signature whatever the name, or by the name (then checked as a zip)."""
    start = source.read(len(XLSX_MAGIC))
    source.seek(0)
    return start == XLSX_MAGIC or name.lower().endswith((".xlsx", ".xlsm"))


def table_rows(
    *, source: BinaryIO, name: str, columns: Columns
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank data row; the header is line 1.

    Cells are text with spreadsheet quoting undone (csv_cells.unescape_cell), blank cells "".
    Raises TableError for a file that cannot be read, at whatever point it turns out so.
    """
    xlsx = is_xlsx(source=source, name=name)
    raw = _xlsx_rows(source, name) if xlsx else _csv_rows(source, name)
    header = next(raw, None)
    if header is None:
        raise TableError(EMPTY_FILE.format(file=name, columns=", ".join(columns.required)))
    wanted = [(index, column) for index, column in enumerate(_check_header(header[1], columns))
              if column]
    for line, cells in raw:
        if xlsx:
            cells = [_text(cell) for cell in cells]
        if not any(cells) or not any(cell.strip() for cell in cells):
            continue
        width = len(cells)
        row = {}
        for index, column in wanted:
            value = cells[index] if index < width else ""
            # Only a cell starting with a quote can be escaped: skip the regex for the rest.
            row[column] = unescape_cell(value) if value[:1] == "'" else value
        yield line, row


def chunked(rows: Iterable, size: int = CHUNK_ROWS) -> Iterator[list]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _check_header(cells: list, columns: Columns) -> list[str]:
    names = [_text(cell).strip().lower() for cell in cells]
    present = [name for name in names if name]
    unknown = [name for name in present if name not in columns.allowed]
    if unknown:
        raise TableError(
            UNKNOWN_COLUMNS.format(
                columns=", ".join(unknown), allowed=", ".join(columns.allowed)
            )
        )
    repeated = sorted({name for name in present if present.count(name) > 1})
    if repeated:
        raise TableError(DUPLICATE_COLUMNS.format(columns=", ".join(repeated)))
    missing = [name for name in columns.required if name not in present]
    if missing:
        raise TableError(MISSING_COLUMNS.format(columns=", ".join(missing)))
    return names


def _text(cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "1" if cell else "0"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _lines(source: BinaryIO, name: str) -> Iterator[str]:
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    number = 0
    try:
        while True:
            try:
                line = text.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError:
                raise TableError(NOT_UTF8.format(file=name)) from None
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise TableError(
                    LINE_TOO_LONG.format(file=name, line=number, limit=MAX_LINE_CHARS)
                )
            # UTF-16 without a BOM can be valid UTF-8 byte by byte; its NULs give it away.
            if "\x00" in line:
                raise TableError(NOT_UTF8.format(file=name))
            yield line
    finally:
        # The caller owns the binary file: leave it open.
        text.detach()


def _csv_rows(source: BinaryIO, name: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(_lines(source, name), strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableError(NOT_CSV.format(file=name, line=reader.line_num, reason=exc)) from None
        yield start, cells
        start = reader.line_num + 1


def _xlsx_rows(source: BinaryIO, name: str) -> Iterator[tuple[int, list]]:
    from openpyxl import load_workbook

    # openpyxl and zipfile raise many unrelated types (BadZipFile, KeyError, ValueError,
    # XML errors, InvalidFileException) for files that are not workbooks; each is the same
    # message to the person who uploaded it.
    try:
        if not zipfile.is_zipfile(source):
            raise TableError(NOT_XLSX.format(file=name, reason="not a zip file"))
        source.seek(0)
        _check_expanded_size(source, name)
        source.seek(0)
        workbook = load_workbook(source, read_only=True, data_only=True)
    except TableError:
        raise
    except Exception as exc:
        raise TableError(NOT_XLSX.format(file=name, reason=_reason(exc))) from None
    try:
        sheet = workbook.worksheets[0] if workbook.worksheets else None
        if sheet is None:
            raise TableError(XLSX_NO_SHEET.format(file=name))
        rows = sheet.iter_rows(values_only=True)
        number = 0
        while True:
            try:
                cells = next(rows)
            except StopIteration:
                return
            except Exception as exc:
                raise TableError(NOT_XLSX.format(file=name, reason=_reason(exc))) from None
            number += 1
            yield number, list(cells)
    finally:
        workbook.close()


def _check_expanded_size(source: BinaryIO, name: str) -> None:
    # openpyxl holds the shared strings in memory even in read-only mode; a small zip can
    # expand to gigabytes. zipfile reads a member only up to its declared size.
    with zipfile.ZipFile(source) as archive:
        members = archive.infolist()
    total = sum(member.file_size for member in members)
    strings = sum(m.file_size for m in members if m.filename.lower().endswith("sharedstrings.xml"))
    if total > MAX_XLSX_EXPANDED or strings > MAX_XLSX_STRINGS:
        raise TableError(
            XLSX_TOO_LARGE.format(
                file=name, limit=MAX_XLSX_EXPANDED // 2**20, strings=MAX_XLSX_STRINGS // 2**20
            )
        )


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
