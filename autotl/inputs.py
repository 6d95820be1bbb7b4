"""What `autotl predict` reads: a CSV file, a JSON lines file (.jsonl, .ndjson, or .json holding
one object per line or an array of objects), or standard input ("-") in either format.

JSON and standard input become a DataFrame of strings, so the one column reader in data.py
handles every format the same way (text column inference, missing values, field sizes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .csvread import decode
from .errors import DataError

STDIN = "-"
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def predict_input(data, encoding: str = "utf-8", stdin=None) -> tuple[object, str]:
    """(`data` as `read_texts` takes it, its name for errors): a CSV path or a DataFrame
    unchanged, JSON lines or standard input read into a DataFrame."""
    if isinstance(data, (str, Path)) and str(data) == STDIN:
        raw = (stdin or sys.stdin.buffer).read()
        if not raw.strip():
            raise DataError("standard input is empty; pipe CSV (with a header) or JSON lines into it")
        text = decode(raw, "<stdin>", encoding)
        if text.lstrip().startswith(("{", "[")):
            return _json_frame(text, "<stdin>"), "<stdin>"
        return _csv_frame(text), "<stdin>"
    if isinstance(data, (str, Path)) and Path(data).suffix.lower() in JSON_SUFFIXES and Path(data).is_file():
        raw = Path(data).read_bytes()
        if not raw.strip():
            raise DataError(f"{data} holds no JSON objects")
        return _json_frame(decode(raw, str(data), encoding), str(data)), str(data)
    return data, "<DataFrame>"


def _json_frame(text: str, name: str):
    import pandas as pd

    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array of objects
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{name} is not valid JSON: {e.msg} at line {e.lineno}") from None
        lines = list(enumerate(records, 1))
    else:
        lines = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{name} line {number} is not JSON ({e.msg}); JSON lines hold one object "
                                "per line") from None
    for number, record in lines:
        if not isinstance(record, dict):
            raise DataError(f"{name} line {number} is a JSON {type(record).__name__}, not an object like "
                            '{"text": "..."}')
    if not lines:
        raise DataError(f"{name} holds no JSON objects")
    frame = pd.DataFrame([record for _, record in lines])
    return frame.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else
                     (v if isinstance(v, str) else json.dumps(v)))


def _csv_frame(text: str):
    import pandas as pd

    from .csvread import parse_csv

    frame = parse_csv(text, "<stdin>", ())
    return pd.DataFrame({c: [v if v.strip() else None for v in frame[c].tolist()] for c in frame.columns})


__all__ = ["predict_input", "STDIN"]
