"""Text pairs: two text columns encoded together, as the tokenizer's pair encoding
(BERT: ``[CLS] first [SEP] second [SEP]``, token type 0 for the first segment, 1 for the second).

`--text-col a,b` names a pair; with no text column named, a pair is inferred when exactly two
columns hold free text (`free_text_columns`). A pair row is a ``(first, second)`` tuple where a
single text is a str (`Split.texts`, `read_texts`): single-text code paths stay as they were,
and a consumer that forgets pairs meets a tuple and fails loudly instead of silently reading
one column. The token type ids travel beside the token ids (`batching.Encoded.types`), so the
model, `transformers.pipeline` (``{"text": a, "text_pair": b}``) and the ONNX graph all see the
segments the tokenizer makes.

Long pairs are cut `longest_first` (tokens come off the longer segment's end until the pair
fits): the tokenizer's default for pairs, and what pipeline users get with truncation=True.
When many rows are cut, head+tail is searched for pairs too (`head_tail_encode`): each
segment gets the share longest_first would give it, and a segment cut to its share keeps
its first quarter and its end, as a single text does (lengths.head_tail_ids) — a claim's
conclusion and an answer's last sentence survive. (transformers.pipeline cannot cut that
way; `autotl predict` and `autotl.load` do.)
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

TRUNCATION = "longest_first"
# A free-text column: on average at least this many words per cell. Titles, questions and
# sentences pass; names, places, dates, ids, URLs and class labels do not.
MIN_MEAN_WORDS = 4
SHOWN_SEPARATOR = " [SEP] "  # between the two texts of a pair where one string is shown (reports)


def parse(text_col: str, columns) -> tuple[str, ...]:
    """The column(s) `text_col` names: itself when `columns` has a column of that very name
    (a name may hold a comma), else "a,b" split into a pair. UsageError for anything else."""
    if text_col in columns or "," not in text_col:
        return (text_col,)
    names = tuple(n.strip() for n in text_col.split(","))
    if len(names) != 2 or not all(names):
        raise UsageError(f"--text-col takes one column, or two comma-separated for a text pair (a,b); got "
                         f"{len(names)} names in '{text_col}'")
    if names[0] == names[1]:
        raise UsageError(f"a text pair needs two different columns, got '{names[0]}' twice in --text-col "
                         f"'{text_col}'; name one column for single texts")
    return names


def is_pairs(texts) -> bool:
    """Whether `texts` (a Split's or predict's) holds pairs: (first, second) tuples."""
    return len(texts) > 0 and isinstance(texts[0], tuple)


def texts_column(cols: dict, columns: tuple[str, ...]) -> str:
    """The column of `cols` the rows' texts are read from: the one text column, or for a pair
    a column "a,b" of (first, second) tuples (None where either cell is missing) added to
    `cols` (as several 0/1 label columns become one column "a,b,c" of label sets)."""
    if len(columns) == 1:
        return columns[0]
    joined = ",".join(columns)
    first, second = (cols[c] for c in columns)
    cols[joined] = [None if a is None or b is None else (a, b) for a, b in zip(first, second)]
    return joined


def free_text_columns(cols: dict) -> list[str]:
    """The columns (in file order) whose cells hold at least MIN_MEAN_WORDS words on average
    and that are not one repeated value."""
    found = []
    for name, values in cols.items():
        present = [v for v in values if v is not None]
        if len(set(present)) >= 2 and np.mean([len(v.split()) for v in present]) >= MIN_MEAN_WORDS:
            found.append(name)
    return found


def describe(columns: tuple[str, ...], inferred: bool) -> str:
    """How the data summary names the text column(s)."""
    if len(columns) == 1:
        return f"text column '{columns[0]}'" + " (inferred)" * inferred
    return f"text pair '{columns[0]}' + '{columns[1]}'" + " (inferred: two text columns)" * inferred


def shown(text) -> str:
    """A text, or a pair as one string, for reports."""
    return SHOWN_SEPARATOR.join(text) if isinstance(text, tuple) else text


def encode(tokenizer, pairs, max_length: int, truncation: str = "head") -> tuple[list[list[int]], list[list[int]] | None]:
    """(token ids, token type ids or None when the tokenizer makes none) of each pair, the
    tokenizer's own pair encoding cut longest_first to `max_length` tokens ("head"), or each
    segment cut to that share head+tail ("head_tail", `head_tail_encode`)."""
    if truncation == "head_tail":
        return head_tail_encode(tokenizer, pairs, max_length)
    if truncation != "head":
        raise ValueError(f"unknown truncation '{truncation}' for text pairs; use head or head_tail")
    first, second = _split(pairs)
    encoded = tokenizer(first, second, truncation=TRUNCATION, max_length=max_length)
    return encoded["input_ids"], encoded.get("token_type_ids")


def head_tail_encode(tokenizer, pairs, max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """The pair encoding with each segment cut to its longest_first share of `max_length`,
    keeping the segment's first quarter of that share and its end (a pair that fits is the
    tokenizer's own encoding, token for token)."""
    from .lengths import head_tail_cut

    (prefix, middle, suffix), types = _pair_layout(tokenizer)
    room = max_length - len(prefix) - len(middle) - len(suffix)
    first, second = _split(pairs)
    words = dict(add_special_tokens=False, truncation=False, verbose=False)
    ids_out, types_out = [], []
    for a, b in zip(tokenizer(first, **words)["input_ids"], tokenizer(second, **words)["input_ids"]):
        keep_a, keep_b = longest_first_shares(len(a), len(b), room)
        a, b = head_tail_cut(a, keep_a), head_tail_cut(b, keep_b)
        ids_out.append(prefix + a + middle + b + suffix)
        if types is not None:
            t_prefix, t_a, t_middle, t_b, t_suffix = types
            types_out.append(t_prefix + [t_a] * len(a) + t_middle + [t_b] * len(b) + t_suffix)
    return ids_out, (types_out if types is not None else None)


def longest_first_shares(first: int, second: int, room: int) -> tuple[int, int]:
    """Tokens each segment keeps when `longest_first` cuts a pair of these lengths to `room`
    (the fast tokenizers' rule, checked against them in tests/test_pairs.py): a segment that
    fits in half the room stays whole and the other gets the rest; else the longer gets the
    larger half (the second, on a tie)."""
    room = max(0, room)
    if first + second <= room:
        return first, second
    half = room // 2
    if min(first, second) <= half:
        return (first, room - first) if first <= second else (room - second, second)
    return (room - half, half) if first > second else (half, room - half)


def _pair_layout(tokenizer):
    """((prefix, middle, suffix) special token ids, (their token types and each segment's) or
    None), read off a probe pair: [CLS] a [SEP] b [SEP] for BERT, <s> a </s></s> b </s> for
    MPNet (transformers 5's fast tokenizers lack build_inputs_with_special_tokens)."""
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", "b")
    ids, kinds = full["input_ids"], full.get("token_type_ids")
    i = next(k for k in range(len(ids)) if ids[k:k + len(a)] == a)
    j = next(k for k in range(i + len(a), len(ids)) if ids[k:k + len(b)] == b)
    parts = (ids[:i], ids[i + len(a):j], ids[j + len(b):])
    if kinds is None:
        return parts, None
    return parts, (kinds[:i], kinds[i], kinds[i + len(a):j], kinds[j], kinds[j + len(b):])


def token_lengths(tokenizer, pairs) -> np.ndarray:
    """Each pair's length in tokens as encoded together, special tokens included, uncut."""
    first, second = _split(pairs)
    a = tokenizer(first, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    b = tokenizer(second, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    specials = tokenizer.num_special_tokens_to_add(pair=True)  # [CLS] a [SEP] b [SEP]: 3 for BERT
    return np.asarray([len(x) + len(y) for x, y in zip(a, b)], dtype=int) + specials


def _split(pairs) -> tuple[list[str], list[str]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


# -- predict: the columns a model reads, as autotl.json records them --------------------------

def trained_columns(schema: dict):
    """What `read_texts` reads for a model whose autotl.json data schema is `schema`: the
    pair's two names (a tuple), or the one text column (runs before pairs record no pair)."""
    pair = schema.get("text_pair")
    return tuple(pair) if pair else schema["text_col"]


def missing_hint(schema: dict) -> str:
    """Added to the error when a column the model was trained on is missing at predict time."""
    pair = schema.get("text_pair")
    if pair:
        return (f" (the model was trained on the text pair '{pair[0]}' + '{pair[1]}'); pass --text-col A,B to "
                "predict on two other columns")
    return " (the model was trained on it); pass --text-col NAME to predict on another column"


def check_columns(column, schema: dict) -> None:
    """UsageError when `column` (as `read_texts` returns it) is one text column for a model
    of text pairs, or a pair for a model of single texts."""
    pair = schema.get("text_pair")
    if pair and not isinstance(column, tuple):
        raise UsageError(f"the model reads text pairs ('{pair[0]}' + '{pair[1]}'), but --text-col names one "
                         f"column ('{column}'); name two, e.g. --text-col {pair[0]},{pair[1]}")
    if not pair and isinstance(column, tuple):
        raise UsageError(f"the model reads one text column ('{schema['text_col']}'), but --text-col names a text "
                         f"pair ('{column[0]}' + '{column[1]}'); name one column")


def frame_columns(column, texts) -> dict:
    """predict's leading output columns: the text column, or the pair's two."""
    if isinstance(column, tuple):
        return {column[0]: [t[0] for t in texts], column[1]: [t[1] for t in texts]}
    return {column: texts}
