"""One contender at one budget from two compare.py results files, cell by cell: what a code
change did to it, paired over seeds, beside the recipe.

    python benchmarks/compare_versions.py OLD.json NEW.json [--contender autotl] [--budget-x 1]
        [--out TABLE.md]

Both files hold compare.py rows (benchmarks/compare.py); the recipe ("seed") rows come from
NEW (they set NEW's budgets). A cell is (dataset, rows); only seeds scored in both files are
paired. Prints a markdown table (and writes it to --out): per cell the recipe, the old and the
new score (mean ± standard error over seeds), new − old and new − recipe; then the means over
the cells both scored and the 1x line of issue 9 (no cell more than 1 point below the recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matrix_table import CELL_MARGIN_1X, fmt, mean_se, paired, score  # noqa: E402


def by_cell(results: list[dict], contender: str, x: float | None) -> dict:
    """{(dataset, rows): {seed: score}} for `contender` at budget `x` (the recipe: no budget)."""
    out: dict = {}
    for r in results:
        if r["contender"] == contender and (contender == "seed" or r.get("budget_x") == x):
            out.setdefault((r["dataset"], r["rows"]), {})[r.get("seed")] = score(r)
    return out


def commits(results: list[dict], contender: str) -> str:
    found = sorted({(r.get("commit") or "unknown")[:7] + ("+dirty" if r.get("dirty") else "")
                    for r in results if r["contender"] == contender})
    return ", ".join(found) or "-"


def render(old: list[dict], new: list[dict], contender: str, x: float) -> str:
    recipe, before, after = by_cell(new, "seed", None), by_cell(old, contender, x), by_cell(new, contender, x)
    lines = [f"# {contender} at {x:g}x: {commits(old, contender)} (old) against {commits(new, contender)} (new)", "",
             "Test score (accuracy, or r2 for regression), mean ± standard error over the seeds both versions "
             "scored; the recipe's runs set both versions' budgets.", "",
             "| dataset | rows | seeds | recipe | old | new | new − old | new − recipe |",
             "|---|---|---|---|---|---|---|---|"]
    means = {"recipe": [], "old": [], "new": []}
    worst = None
    for cell in sorted(set(before) & set(after), key=lambda c: (c[1], c[0])):
        seeds = sorted(s for s in set(before[cell]) & set(after[cell]) & set(recipe.get(cell, {}))
                       if None not in (before[cell][s], after[cell][s], recipe[cell][s]))
        if not seeds:
            continue
        pick = {name: {s: src[cell][s] for s in seeds} for name, src in
                (("recipe", recipe), ("old", before), ("new", after))}
        row = {name: mean_se(list(v.values())) for name, v in pick.items()}
        gain, margin = mean_se(paired(pick["new"], pick["old"])), mean_se(paired(pick["new"], pick["recipe"]))
        for name in means:
            means[name].append(row[name][0])
        worst = margin[0] if worst is None else min(worst, margin[0])
        lines.append(f"| {cell[0]} | {cell[1]} | {','.join(map(str, seeds))} | {fmt(*row['recipe'])} | "
                     f"{fmt(*row['old'])} | {fmt(*row['new'])} | {fmt(*gain, sign=True)} | {fmt(*margin, sign=True)} |")
    n = len(means["new"])
    if n:
        avg = {k: sum(v) / n for k, v in means.items()}
        lines.append(f"| **mean of {n} cells** | | | {avg['recipe']:.3f} | {avg['old']:.3f} | {avg['new']:.3f} | "
                     f"{avg['new'] - avg['old']:+.3f} | {avg['new'] - avg['recipe']:+.3f} |")
        lines += ["", f"- mean(new) >= mean(recipe): **{'met' if avg['new'] >= avg['recipe'] else 'missed'}** "
                      f"({avg['new']:.3f} vs {avg['recipe']:.3f})",
                  f"- no cell more than {CELL_MARGIN_1X} below the recipe: "
                  f"**{'met' if worst >= -CELL_MARGIN_1X else 'missed'}** (worst cell {worst:+.3f})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--contender", default="autotl")
    p.add_argument("--budget-x", type=float, default=1.0)
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    try:
        old, new = (json.loads(path.read_text())["results"] for path in (args.old, args.new))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the results files: {exc}", file=sys.stderr)
        return 2
    table = render(old, new, args.contender, args.budget_x)
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
