"""The markdown summary of the benchmark matrix, computed from compare_matrix.json alone.

    python benchmarks/compare.py --table [--out benchmarks/results/compare_matrix.json]

writes compare_matrix.md next to the JSON (compare.py also rewrites it after every run).

A *cell* is (dataset, rows, budget); its seeds are the repetitions. Each contender's
primary test score (accuracy, or r2 for regression) is averaged over the cell's seeds,
± its standard error (sample std / sqrt(n); '-' when n < 2). autotl is compared with the
recipe and with hf_search seed by seed: the paired differences' mean is a win or a loss
only when it is larger than its standard error (a single seed: larger than TIE), else a
tie. The recipe has no budget (it is what the budgets are multiples of), so the same
recipe runs appear in every budget's cells.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

NAMES = {"seed": "recipe", "hf_search": "hf_search", "autotl": "autotl"}  # contender -> column
TIE = 0.005  # a single-seed difference smaller than this is a tie
CELL_MARGIN_1X = 0.01  # at 1x, no cell may be more than this below the recipe
MEAN_MARGIN_3X = 0.01  # at 3x, autotl's matrix mean must beat the best other by this


# -- numbers -----------------------------------------------------------------------------------

def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, standard error of the mean); (None, None) for no values, SE None for one."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def verdict(diffs: list[float]) -> str | None:
    """'win', 'tie' or 'loss' for paired differences (first minus second); None for none."""
    mean, se = mean_se(diffs)
    if mean is None:
        return None
    tie = abs(mean) <= se if se is not None else abs(mean) < TIE
    return "tie" if tie else "win" if mean > 0 else "loss"


def paired(a: dict, b: dict) -> list[float]:
    """Differences a - b over the seeds both scored."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b)) if a[s] is not None and b[s] is not None]


def scored(by_seed: dict) -> list[float]:
    return [v for v in by_seed.values() if v is not None]


def fmt(mean: float | None, se: float | None = None, sign: bool = False) -> str:
    """'0.850 ± 0.012' ('± -' without an SE); '-' for no mean."""
    if mean is None:
        return "-"
    return f"{mean:{'+' if sign else ''}.3f} ± " + (f"{se:.3f}" if se is not None else "-")


# -- results -> cells --------------------------------------------------------------------------

def score(r: dict) -> float | None:
    """A run's primary test score; None when it failed or scored nothing."""
    if "error" in r:
        return None
    value = r.get("score")
    if value is None:  # written by an older compare.py
        value = r.get("r2") if r.get("task") == "regression" else r.get("accuracy")
    return value


def cells(results: list[dict]) -> tuple[dict, list[float | None], set[str]]:
    """({(dataset, rows, budget_x): {contender: {seed: score or None}}}, budgets, regression
    datasets). A failed run is a None score; a rerun of the same key replaces it."""
    recipe: dict[tuple, dict] = {}
    search: dict[tuple, dict] = {}
    regression: set[str] = set()
    for r in results:
        cell = (r["dataset"], r["rows"])
        if r.get("task") == "regression":
            regression.add(r["dataset"])
        if r["contender"] == "seed":
            recipe.setdefault(cell, {})[r.get("seed")] = score(r)
        else:
            search.setdefault((*cell, r.get("budget_x")), {}).setdefault(r["contender"], {})[r.get("seed")] = score(r)
    budgets = sorted({k[2] for k in search if k[2] is not None}) or [None]
    datasets = list(dict.fromkeys(r["dataset"] for r in results))  # first-seen order
    pairs = sorted({*recipe, *((d, n) for d, n, _ in search)}, key=lambda c: (datasets.index(c[0]), c[1]))
    table = {}
    for x in budgets:
        for cell in pairs:
            table[(*cell, x)] = {"seed": recipe.get(cell, {}), **search.get((*cell, x), {})}
    return table, budgets, regression


# -- markdown ----------------------------------------------------------------------------------

def render(report: dict) -> str:
    results = report.get("results", [])
    table, budgets, regression = cells(results)
    lines = ["# Benchmark matrix: recipe vs hf_search vs autotl", "", *summary(results), ""]
    for x in budgets:
        lines += budget_section(table, x, regression)
    lines += targets(table)
    lines += failures(results)
    return "\n".join(lines) + "\n"


def summary(results: list[dict]) -> list[str]:
    failed = sum(score(r) is None for r in results)
    seeds = sorted({r.get("seed") for r in results}, key=str)
    autotl = [r for r in results if r["contender"] == "autotl"]
    lines = [f"{len(results)} runs ({failed} failed or unscored); seeds {', '.join(map(str, seeds)) or '-'}. "
             "Test score: accuracy, or r2 where marked (r2); mean ± standard error over seeds.",
             f"autotl runs with a leave-one-dataset-out portfolio: {sum(bool(r.get('portfolio')) for r in autotl)} "
             f"of {len(autotl)}."]
    if warning := commit_warning(results):
        lines += ["", warning]
    return lines


def commit_warning(results: list[dict]) -> str | None:
    """A warning when the runs come from more than one commit or from a modified tree."""
    states = Counter((r.get("commit") or "unknown")[:10] + ("+dirty" if r.get("dirty") else "") for r in results)
    if len(states) <= 1 and not any(r.get("dirty") for r in results):
        return None
    named = ", ".join(f"{s} ({n} runs)" for s, n in states.most_common())
    return f"**Warning: results come from more than one commit or a modified tree (autotl/, plugins/): {named}.**"


def budget_section(table: dict, x: float | None, regression: set[str]) -> list[str]:
    title = f"## Budget {x:g}x the recipe's wall seconds" if x is not None else "## Recipe only (no budget run yet)"
    lines = [title, "",
             "| dataset | rows | recipe | hf_search | autotl | autotl − recipe | vs recipe "
             "| autotl − hf_search | vs hf_search |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [(k, v) for k, v in table.items() if k[2] == x]
    for (dataset, n, _), cell in rows:
        name = dataset + (" (r2)" if dataset in regression else "")
        entries = [entry(cell.get(c, {})) for c in NAMES]
        lines.append(f"| {name} | {n} | " + " | ".join(entries) + " | "
                     + " | ".join(comparison(cell, other) for other in ("seed", "hf_search")) + " |")
    lines.append(matrix_row([cell for _, cell in rows]))
    return lines + [""]


def entry(by_seed: dict) -> str:
    values, failed = scored(by_seed), sum(v is None for v in by_seed.values())
    text = fmt(*mean_se(values)) if values else "-"
    return text + (f" ({failed} failed)" if failed else "")


def comparison(cell: dict, other: str) -> str:
    """'mean ± SE | verdict' of autotl minus `other`, paired over seeds."""
    diffs = paired(cell.get("autotl", {}), cell.get(other, {}))
    if not diffs:
        return "- | -"
    return f"{fmt(*mean_se(diffs), sign=True)} | {verdict(diffs)}"


def cell_mean(cell: dict, contender: str) -> float | None:
    return mean_se(scored(cell.get(contender, {})))[0]


def matrix_row(cells_: list[dict]) -> str:
    """Matrix means (mean over cells of the cell means) and win/tie/loss counts."""
    means = []
    for c in NAMES:
        values = [m for m in (cell_mean(cell, c) for cell in cells_) if m is not None]
        mean = f"{sum(values) / len(values):.3f}" if values else "-"
        means.append(mean + (f" ({len(values)}/{len(cells_)} cells)" if values and len(values) < len(cells_) else ""))
    comparisons = []
    for other in ("seed", "hf_search"):
        diffs = [mean_se(d)[0] for d in (paired(cell.get("autotl", {}), cell.get(other, {})) for cell in cells_) if d]
        counts = Counter(verdict(paired(cell.get("autotl", {}), cell.get(other, {}))) for cell in cells_)
        comparisons += [f"{sum(diffs) / len(diffs):+.3f}" if diffs else "-",
                        f"{counts['win']}/{counts['tie']}/{counts['loss']} (W/T/L)"]
    return "| **matrix mean** | | " + " | ".join(means) + " | " + " | ".join(comparisons) + " |"


def targets(table: dict) -> list[str]:
    """The targets at 1x and 3x, met or missed, with the figures they rest on."""
    lines = ["## Targets", ""]
    for x, checks in ((1.0, (mean_at_least, no_cell_below_margin)), (3.0, (mean_beats_both, no_cell_lost))):
        at = {k: v for k, v in table.items() if k[2] == x}
        for check in checks:
            lines.append(f"- {x:g}x: " + (check(at) if at else f"{check.__doc__}: not measured (no {x:g}x runs)"))
    return lines + [""]


def common_means(at: dict, contenders: tuple[str, ...]) -> tuple[list[float], int]:
    """Matrix means of `contenders` over the cells where all of them have a score."""
    common = [cell for cell in at.values() if all(cell_mean(cell, c) is not None for c in contenders)]
    return [sum(cell_mean(cell, c) for cell in common) / len(common) if common else None
            for c in contenders], len(common)


def met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def mean_at_least(at: dict) -> str:
    """mean(autotl) >= mean(recipe)"""
    (autotl, recipe), n = common_means(at, ("autotl", "seed"))
    if not n:
        return f"{mean_at_least.__doc__}: not measured (no cell with both)"
    return f"{mean_at_least.__doc__}: {met(autotl >= recipe)} ({autotl:.3f} vs {recipe:.3f}, over {n} cells)"


def no_cell_below_margin(at: dict) -> str:
    """no cell more than 0.01 below the recipe"""
    worst = worst_cell(at)
    if worst is None:
        return f"{no_cell_below_margin.__doc__}: not measured (no cell with both)"
    (dataset, rows, _), diff, _ = worst
    below = [k for k, cell in at.items() if (d := paired(cell.get("autotl", {}), cell.get("seed", {})))
             and mean_se(d)[0] < -CELL_MARGIN_1X]
    return (f"{no_cell_below_margin.__doc__}: {met(not below)} (worst cell {dataset}/{rows}: {diff:+.3f}"
            + (f"; {len(below)} cell(s) below by more than {CELL_MARGIN_1X})" if below else ")"))


def mean_beats_both(at: dict) -> str:
    """mean(autotl) >= max(mean(recipe), mean(hf_search)) + 0.01"""
    (autotl, recipe, hf), n = common_means(at, ("autotl", "seed", "hf_search"))
    if not n:
        return f"{mean_beats_both.__doc__}: not measured (no cell with all three)"
    goal = max(recipe, hf) + MEAN_MARGIN_3X
    return (f"{mean_beats_both.__doc__}: {met(autotl >= goal)} (autotl {autotl:.3f}, recipe {recipe:.3f}, "
            f"hf_search {hf:.3f}, goal {goal:.3f}, over {n} cells)")


def no_cell_lost(at: dict) -> str:
    """no cell below the recipe by more than its SE"""
    worst = worst_cell(at)
    if worst is None:
        return f"{no_cell_lost.__doc__}: not measured (no cell with both)"
    (dataset, rows, _), diff, se = worst
    lost = [k for k, cell in at.items() if verdict(paired(cell.get("autotl", {}), cell.get("seed", {}))) == "loss"]
    return (f"{no_cell_lost.__doc__} (one seed: by more than {TIE}): {met(not lost)} (worst cell {dataset}/{rows}: "
            f"{fmt(diff, se, sign=True)}" + (f"; lost: {', '.join(f'{d}/{n}' for d, n, _ in lost)})" if lost else ")"))


def worst_cell(at: dict) -> tuple[tuple, float, float | None] | None:
    """(cell, mean, SE) of the lowest paired mean of autotl minus the recipe."""
    diffs = [(k, *mean_se(d)) for k, cell in at.items() if (d := paired(cell.get("autotl", {}), cell.get("seed", {})))]
    return min(diffs, key=lambda t: t[1]) if diffs else None


def failures(results: list[dict]) -> list[str]:
    failed = [r for r in results if score(r) is None]
    if not failed:
        return []
    lines = ["## Failed or unscored runs", ""]
    for r in failed:
        x = f" {r['budget_x']:g}x" if r.get("budget_x") is not None and r["contender"] != "seed" else ""
        why = f"exit {r.get('returncode')}" if "error" in r else "no score (no epoch in budget?)"
        lines.append(f"- {r['dataset']} rows {r['rows']} seed {r.get('seed')} {NAMES.get(r['contender'])}{x}: {why}")
    return lines + [""]


def write(report: dict, json_path: Path) -> Path:
    """Write the table next to `json_path` (same name, .md); returns its path."""
    md = json_path.with_suffix(".md")
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(render(report))
    tmp.replace(md)
    return md


def load(json_path: Path) -> dict:
    return json.loads(json_path.read_text())
