"""Row files as they are stored: JSONL, JSON lists and Parquet, gathered into one JSONL, one row a line.

    from pipeline import row_files
    files = row_files.local_files(Path("my_rows/"))                 # the .jsonl/.json/.parquet files named
    segments = row_files.gather([(path, "my_rows/a.parquet", None), ...], Path("data/raw/dataset.jsonl"))
    for line, data, error in row_files.read_lines(Path("data/raw/dataset.jsonl"), max_bytes=1 << 20): ...
    row, error = row_files.parse_row(data)                          # never raises
    row_files.locate(segments, line)                                # ("my_rows/a.parquet row index 3", None)

The fetch stage gathers the user's files into `data/raw/dataset.jsonl` and records, in
`data/raw/source.json` under "segments", which lines came from which file, so the format stage
can name the user's own file and line (JSONL) or row index (JSON list, Parquet; counted from 0).
A single JSONL file is copied byte for byte: its line numbers are the user's own.

Rows are read as stored, never through a schema-unifying loader (`datasets.load_dataset` adds
every other row's tool properties to each tool as nulls):
- JSONL: copied as bytes; lines split on "\\n" only; a UTF-8 byte-order mark at the start of a file
  and a "\\r" before the "\\n" are accepted. Bytes that are not UTF-8 stay as they are, for the
  format stage to reject with the line number.
- JSON: a list of rows (or an object holding one under "rows"/"data"/"train", or JSONL saved as
  .json). A list is split into items without parsing them, so one broken item is one rejected
  row and the others are still read; line breaks between tokens become spaces.
- Parquet (pyarrow, batch by batch): a struct column has every field in every row, so a null field
  in a struct is taken as absent; text columns holding JSON are decoded by the format stage.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from pipeline import rows as row_shapes
from pipeline.common import UserError

SUFFIXES = (".jsonl", ".json", ".parquet")
BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_WRAPPER_KEYS = ("rows", "data", "train")


# ---------------------------------------------------------------- which files


def local_files(path: Path) -> list[Path]:
    """The row files a local source names: one .jsonl/.json/.parquet file, or every one in a folder (sorted)."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise UserError(f"{path} is not a .jsonl, .json or .parquet file: convert it, or point data.path elsewhere")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if files:
            return files
        raise UserError(f"{path} holds no .jsonl, .json or .parquet files: put your rows there or point data.path elsewhere")
    raise UserError(f"data.path {str(path)!r} does not exist: point it at a JSONL/JSON/Parquet file or folder of rows")


# ---------------------------------------------------------------- gather into one JSONL


def gather(sources: list[tuple[Path, str, str | None]], out: Path) -> list[dict[str, Any]]:
    """Write every row of the (path, display name, split or None) sources to `out`, one a line.

    Returns the segments: {"file", "format", "first_line", "lines", "split"} per source, in order.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(sources) == 1 and sources[0][0].suffix.lower() == ".jsonl":
        path, name, split = sources[0]
        shutil.copyfile(path, out)
        return [{"file": name, "format": "jsonl", "first_line": 1, "lines": count_lines(out), "split": split}]
    segments, line = [], 1
    with open(out, "wb") as f:
        for path, name, split in sources:
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                written = _copy_jsonl(path, f)
            else:
                written = 0
                for data in (json_items(path) if suffix == ".json" else parquet_items(path)):
                    f.write(data + b"\n")
                    written += 1
            segments.append({"file": name, "format": suffix[1:], "first_line": line, "lines": written, "split": split})
            line += written
    return segments


def _copy_jsonl(path: Path, f) -> int:
    """Append a JSONL file's bytes (its byte-order mark dropped, a last newline added); returns its line count."""
    lines, last = 0, b"\n"
    with open(path, "rb") as src:
        first = True
        for block in iter(lambda: src.read(_CHUNK), b""):
            if first and block.startswith(BOM):
                block = block[len(BOM):]
            first = False
            if block:
                f.write(block)
                lines += block.count(b"\n")
                last = block[-1:]
    if last != b"\n":
        f.write(b"\n")
        lines += 1
    return lines


def count_lines(path: Path) -> int:
    """Lines of a file as `read_lines` numbers them (a last line without "\\n" counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def locate(segments: list[dict[str, Any]] | None, line: int, raw_name: str = "") -> tuple[str, str | None]:
    """(the user's file and line or row index, the split its file gives or None) for a line of the gathered JSONL."""
    for seg in segments or []:
        offset = line - seg["first_line"]
        if 0 <= offset < seg["lines"]:
            where = f"line {offset + 1}" if seg["format"] == "jsonl" else f"row index {offset}"
            return f"{seg['file']} {where}", seg.get("split")
    return (f"{raw_name} line {line}" if raw_name else f"line {line}"), None


# ---------------------------------------------------------------- JSONL lines, bounded


def read_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | None, str]]:
    """(line number, the line's bytes or None, reason) for every non-blank line, in bounded memory.

    A line over `max_bytes` is skipped unread (None, reason). A byte-order mark at the start of
    the file and a "\\r" before "\\n" are removed.
    """
    number, buffer, size, over = 1, bytearray(), 0, False
    first = True
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            if first:
                block = block[len(BOM):] if block.startswith(BOM) else block
                first = False
            start = 0
            while True:
                end = block.find(b"\n", start)
                piece = block[start:] if end < 0 else block[start:end]
                size += len(piece)
                if size > max_bytes:
                    over, buffer = True, bytearray()
                elif not over:
                    buffer += piece
                if end < 0:
                    break
                yield from _line_verdict(number, buffer, size, over, max_bytes)
                number, buffer, size, over = number + 1, bytearray(), 0, False
                start = end + 1
    if size:
        yield from _line_verdict(number, buffer, size, over, max_bytes)


def _line_verdict(number: int, buffer: bytearray, size: int, over: bool, max_bytes: int):
    if over:
        yield number, None, f"the row is {size:,} bytes, over format.max_row_bytes ({max_bytes:,}); it was not read"
        return
    data = bytes(buffer).rstrip(b"\r")
    if data.strip():
        yield number, data, ""


def parse_row(data: bytes) -> tuple[Any, str]:
    """(parsed JSON value, "") or (None, one short reason) for one stored row's bytes: never raises."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte 0x{data[err.start]:02x} at byte {err.start + 1})"
    return row_shapes.loads_json(text)


def parse_json_file(data: bytes) -> tuple[Any, str]:
    """A whole JSON document's bytes (a tools file): BOM accepted, never raises."""
    return parse_row(data[len(BOM):] if data.startswith(BOM) else data)


# ---------------------------------------------------------------- JSON files


_STRUCTURE = re.compile(rb'[\[\]{},"]')
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NEWLINES = re.compile(rb"[\r\n]")


def json_items(path: Path) -> Iterator[bytes]:
    """The rows of a .json file as one line of JSON text each (items are split, not parsed)."""
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM):]
    start = len(data) - len(data.lstrip())
    if data[start:start + 1] == b"[":
        yield from _list_items(data, start, path)
        return
    value = _whole_json(data, path)
    if value is _JSONL:  # JSONL saved as .json
        for _, line, _ in _lines_of(data):
            yield line
        return
    if isinstance(value, dict):
        value = next((value[k] for k in _WRAPPER_KEYS if isinstance(value.get(k), list)), [value])
    if not isinstance(value, list):
        raise UserError(f"{path}: expected a JSON list of rows (or JSONL, one row per line), got {row_shapes.kind(value)}")
    for row in value:
        yield json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")


_JSONL = object()


def _whole_json(data: bytes, path: Path) -> Any:
    """A JSON document that is not a list: parsed whole (a problem is one sentence naming its line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at byte {err.start + 1}); save it as UTF-8") from None
    if row_shapes.text_nesting(text) > row_shapes.MAX_DEPTH:
        raise UserError(f"{path}: cannot be read as JSON (nested deeper than {row_shapes.MAX_DEPTH} levels); "
                        "convert the file to JSONL, one row per line")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":
            return _JSONL
        raise UserError(f"{path}: invalid JSON at line {err.lineno} ({err.msg}); fix it or convert the file to JSONL") from None
    except (RecursionError, ValueError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UserError(f"{path}: cannot be read as JSON ({reason}); convert the file to JSONL, one row per line") from None


def _lines_of(data: bytes):
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield number, line.rstrip(b"\r"), ""


def _list_items(data: bytes, start: int, path: Path) -> Iterator[bytes]:
    """Split a JSON list's bytes into its items by bracket depth (strings skipped), without parsing them."""
    pos, depth, item_start, items = start + 1, 0, start + 1, 0
    strings: list[tuple[int, int]] = []  # string spans inside the current item (their line breaks stay invalid)
    while True:
        match = _STRUCTURE.search(data, pos)
        if match is None:
            raise UserError(f"{path}: the JSON list is not closed with ']' (after {items} row(s)); fix the end of the file")
        char, pos = match.group(), match.end()
        if char == b'"':
            string = _STRING.match(data, match.start())
            if string is None:
                raise UserError(f"{path}: row index {items} has a string that is never closed, so the rows after it "
                                "cannot be found; fix that row")
            strings.append((string.start(), string.end()))
            pos = string.end()
        elif char in b"[{":
            depth += 1
        elif char == b"}" and depth > 0:
            depth -= 1
        elif char == b"]":
            if depth > 0:
                depth -= 1
                continue
            item = data[item_start:match.start()]
            if item.strip() or items:
                yield _one_line(item, strings, item_start)
            if data[pos:].strip():
                raise UserError(f"{path}: text after the end of the JSON list; fix the end of the file")
            return
        elif char == b"," and depth == 0:
            yield _one_line(data[item_start:match.start()], strings, item_start)
            items += 1
            item_start, strings = pos, []


def _one_line(item: bytes, strings: list[tuple[int, int]], offset: int) -> bytes:
    """An item on one line: line breaks between tokens become spaces; inside a string (where JSON does
    not allow them) they become a control character that keeps the row invalid."""
    out, pos = bytearray(), 0
    for s, e in strings:
        s, e = s - offset, e - offset
        out += _NEWLINES.sub(b" ", item[pos:s]) + _NEWLINES.sub(b"\x01", item[s:e])
        pos = e
    out += _NEWLINES.sub(b" ", item[pos:])
    return bytes(out).strip() or b","  # an empty item (a stray ','): invalid JSON, rejected with its index


# ---------------------------------------------------------------- Parquet files


def parquet_items(path: Path) -> Iterator[bytes]:
    """The rows of a Parquet file as one line of JSON text each, read batch by batch with pyarrow."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        batches = table.iter_batches(batch_size=256)
        for batch in batches:
            for row in batch.to_pylist(maps_as_pydicts="lossy"):
                text = json.dumps(_plain(row, struct=True), ensure_ascii=False, default=str)
                yield text.encode("utf-8", "surrogateescape")
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types for a broken file
        raise UserError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err}); re-export it") from None


def _plain(value: Any, struct: bool) -> Any:
    """Parquet values as JSON values: struct nulls dropped, bytes as text, dates as ISO text.

    Bytes that are not UTF-8 are kept (as surrogate escapes, written back as the same bytes) so the
    format stage rejects the row as not UTF-8, with its row index.
    """
    if isinstance(value, dict):
        return {str(k): _plain(v, struct) for k, v in value.items() if not (struct and v is None)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, struct) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "Decimal":
        return float(value)
    return value
