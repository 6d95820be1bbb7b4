"""A real multi-label dataset from Banking77: each of its 77 intents mapped to 1-3 overlapping
topics by keyword rules on the intent's name (e.g. `declined_card_payment` -> card, payment,
problem), written as `text,labels` CSVs with label sets joined by "|".

    python benchmarks/multilabel_data.py [--out DIR] [--train-rows 400] [--test-rows 500] [--seed 0]

Writes DIR/train.csv and DIR/test.csv (default DIR: /tmp/autotl-multilabel, outside the
repository: derived data is regenerated, never committed) and prints each topic's share.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
DEFAULT_OUT = Path("/tmp/autotl-multilabel")
MAX_TOPICS = 3
# Topic -> whole words (or word_sequences) of an intent name that put the intent in it; the
# first MAX_TOPICS topics that match, in this order, are the intent's labels.
TOPICS = {
    "card": ("card", "cards", "visa", "mastercard", "contactless", "pin"),
    "transfer": ("transfer", "beneficiary", "receiving_money", "direct_debit"),
    "top_up": ("top_up", "topping_up"),
    "cash": ("cash", "atm"),
    "fees": ("fee", "charge", "charged", "exchange_rate"),
    "currency": ("exchange", "currency", "currencies", "fiat"),
    "problem": ("failed", "declined", "not_working", "not_recognised", "not_received", "reverted", "wrong",
                "swallowed", "blocked", "lost", "stolen", "compromised", "forgotten", "not_showing",
                "not_updated", "twice", "not_allowed", "unable"),
    "pending": ("pending", "timing", "arrival", "estimate", "about_to_expire"),
    "security": ("verify", "identity", "passcode", "pin", "compromised", "stolen"),
    "account": ("account", "personal_details", "balance", "country_support", "age_limit"),
    "payment": ("payment", "pay", "refund", "statement"),
}


def topics_of(intent: str) -> list[str]:
    """The intent's topics (1 to MAX_TOPICS); an intent no rule matches is an account question."""
    name = f"_{intent.lower().rstrip('?')}_"
    found = [topic for topic, words in TOPICS.items() if any(f"_{w}_" in name for w in words)]
    return found[:MAX_TOPICS] or ["account"]


def read(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(row["text"], row["label"]) for row in csv.DictReader(f)]


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "labels"])
        writer.writerows((text, "|".join(topics_of(intent))) for text, intent in rows)


def build(out: Path, train_rows: int, test_rows: int, seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", train_rows), ("test", test_rows)):
        rows = read(SOURCE / f"{split}.csv")
        paths[split] = out / f"{split}.csv"
        write(paths[split], rng.sample(rows, min(n, len(rows))))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = build(args.out, args.train_rows, args.test_rows, args.seed)
    intents = sorted({intent for _, intent in read(SOURCE / "train.csv")})
    per_intent = [len(topics_of(i)) for i in intents]
    print(f"{len(intents)} intents -> {len(TOPICS)} topics, {sum(per_intent) / len(per_intent):.2f} per intent "
          f"({per_intent.count(1)} with 1, {per_intent.count(2)} with 2, {per_intent.count(3)} with 3)")
    for topic in TOPICS:
        print(f"  {topic:<9} {sum(topic in topics_of(i) for i in intents):>2} intents")
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
