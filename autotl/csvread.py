"""Reading a CSV path or a DataFrame into columns of strings, refusing what would break
later: not a CSV, a wrong encoding, no header, duplicate column names, fields or files too
large to hold in memory. Every refusal is one DataError naming the problem and the fix."""

from __future__ import annotations

import codecs
import io
import os
import re
import warnings
from pathlib import Path

import pandas as pd

from autotl.errors import DataError, UsageError

# Texts are cut to max_length tokens, but the tokenizer first encodes a whole text (about
# 100 bytes of memory per character): a 50 MB cell would need ~5 GB. 1M characters is far
# beyond any token budget and costs ~100 MB.
MAX_FIELD_CHARS = 1_000_000
# The whole file is held in memory a few times over while it is read (bytes, text, parsed
# cells); a file past this is better sampled than searched on.
MAX_FILE_BYTES = 1_000_000_000
_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

Columns = dict[str, list]  # column name -> values as str, None where missing


def read_columns(data, encoding: str, frame_name: str, named=()) -> tuple[Columns, str]:
    """Columns of a CSV path or DataFrame, every value a str or None (missing). `named`:
    the column names the caller gave (they make a first line with a numeric name a header)."""
    if isinstance(data, pd.DataFrame):
        _check_unique([str(c) for c in data.columns], frame_name, strip=False)
        return {str(c): _frame_column(data[c]) for c in data.columns}, frame_name
    if not isinstance(data, (str, os.PathLike)):
        raise UsageError(f"data must be a CSV path or a pandas DataFrame, "
                         f"got {type(data).__name__}")
    path, name = Path(data), str(data)
    if not path.exists():
        raise DataError(f"{name} not found; check the path")
    if path.is_dir():
        raise DataError(f"{name} is a directory; pass the CSV file inside it")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{name} is {_mb(size)}; autotl reads at most {_mb(MAX_FILE_BYTES)} (the whole file "
                        f"is held in memory); pass a sample of its rows")
    try:
        raw = path.read_bytes()
        frame = parse_csv(decode(raw, name, encoding), name, named)
        del raw  # not needed while the columns are built
        return {c: [v if v.strip() else None for v in frame[c].tolist()] for c in frame.columns}, name
    except OSError as e:
        raise DataError(f"cannot read {name}: {e.strerror}; check its permissions") from None
    except MemoryError:
        raise DataError(f"{name} ({_mb(size)}) does not fit in memory; pass a sample of its rows") from None


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size:,} bytes"


def _frame_column(series: pd.Series) -> list:
    values = [_cell(v) for v in series.tolist()]
    # pandas stores an int column with gaps as float (1 -> 1.0); undo that, or integer
    # class labels would look like regression values
    if series.dtype.kind == "f" and series.isna().any() and (series.dropna() % 1 == 0).all():
        values = [None if v is None else str(int(float(v))) for v in values]
    return values


def _cell(v) -> str | None:
    """A DataFrame value as str, or None when missing (None, NaN, NA, blank)."""
    if isinstance(v, str):
        return v if v.strip() else None
    try:
        if v is None or bool(pd.isna(v)):
            return None
    except (TypeError, ValueError):  # array-like cell: pd.isna gives an array
        pass
    return str(v)


def decode(raw: bytes, name: str, encoding: str) -> str:
    """A file's bytes as text; DataError names a bad encoding, NUL bytes or an empty file."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise UsageError(f"unknown encoding '{encoding}'; use a Python codec name such as "
                         f"utf-8 or latin-1") from None
    if not raw.strip():
        raise DataError(f"{name} is empty; it needs a header line (e.g. text,label) and data rows")
    if b"\x00" in raw:  # text CSVs never hold NUL bytes; UTF-16 and binary files do
        raise DataError(f"{name} is not a CSV: it holds NUL bytes (binary or UTF-16); "
                        f"save it as a UTF-8 CSV")
    if codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        shown = "UTF-8" if codec == "utf-8" else encoding
        fix = "re-save it as UTF-8 or pass --encoding latin-1" if codec == "utf-8" else \
            "pass the file's actual encoding with --encoding"
        raise DataError(f"{name} is not {shown}: invalid byte 0x{raw[e.start]:02x} at line {line}; "
                        f"{fix}") from None


def parse_csv(text: str, name: str, named=()) -> pd.DataFrame:
    """CSV text -> a DataFrame of str (blank where missing); DataError names what is wrong."""
    options = dict(dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more fields than the header, then drops them
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), **options)
            # pandas renames a repeated name ('text' -> 'text.1'); read as data, the first line
            # shows the names as written (its first MB: a header is never longer)
            header = pd.read_csv(io.StringIO(text[:1 << 20]), header=None, nrows=1, **options).iloc[0]
    except (pd.errors.ParserError, pd.errors.ParserWarning) as e:
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", " ".join(str(e).split()))
        raise DataError(f"{name} is not a valid CSV: {detail}; quote fields that contain "
                        f"commas or line breaks") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty; it needs a header line and data rows") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    numeric = [c for c in frame.columns if _NUM.fullmatch(c)]
    # A numeric name ('2020') usually means the first line is data, unless the caller named
    # a column of that line: then it is the header.
    if numeric and not set(named) & set(frame.columns):
        raise DataError(f"{name} has no header: its first line looks like data "
                        f"({', '.join(frame.columns)}); add a header line such as text,label, or, if "
                        f"that line is the header, name its columns with --text-col and --label-col")
    _check_unique([str(c) for c in header], name, strip=True)
    if frame.empty:
        raise DataError(f"{name} has a header ({', '.join(frame.columns)}) but no data rows")
    return frame


def _check_unique(columns: list[str], name: str, *, strip: bool) -> None:
    """Column names are compared as autotl uses them (a CSV's without spaces around them)."""
    names = [c.strip() for c in columns] if strip else columns
    repeated = next((c for c in names if names.count(c) > 1), None)
    if repeated is not None:
        spelled = sorted({f"'{raw}'" for raw, c in zip(columns, names) if c == repeated})
        how = f" ({' and '.join(spelled)}: spaces around names are ignored)" if len(spelled) > 1 else ""
        raise DataError(f"{name} has {names.count(repeated)} columns named '{repeated}'{how}; column "
                        f"names must be unique: rename one of them")


def check_field_sizes(cols: Columns, name: str, columns) -> None:
    """Every field of `columns` fits MAX_FIELD_CHARS; else one DataError naming the row."""
    for col in dict.fromkeys(columns):
        sizes = [0 if v is None else len(v) for v in cols[col]]
        if sizes and max(sizes) > MAX_FIELD_CHARS:
            row = max(range(len(sizes)), key=sizes.__getitem__)
            raise DataError(f"{name}: row {row + 1} (header not counted) has a {max(sizes):,}-character "
                            f"'{col}' field; at most {MAX_FIELD_CHARS:,} characters are read per field "
                            f"(texts are cut to --max-length tokens anyway): shorten it or drop the row")
