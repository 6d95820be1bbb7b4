"""The charts of report.html: matplotlib figures rendered as inline SVG text.

No pyplot (no global figure state, no GUI backend is ever selected): each chart is a
`Figure` on its own Agg canvas, saved as SVG into a string. Text stays text in the SVG
(selectable, small); matplotlib escapes it as XML, and math parsing is off, so a label
such as ``$5 <b>`` is drawn as typed, never interpreted.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Settings every chart is drawn and saved under: fixed id salt (the same page for the
# same study), text as <text>, no mathtext, one short font list per text element.
_RC = {"svg.fonttype": "none", "svg.hashsalt": "autotl", "text.parse_math": False,
       "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "axes.grid": True,
       "grid.color": "#dddddd", "grid.linestyle": "-", "axes.spines.top": False, "axes.spines.right": False}

# How a trial's validation curve is drawn, by state: pruned trials stand apart (dashed, ending in a cross).
CURVE_STYLE = {"complete": ("-", "o"), "pruned": ("--", "x"), "other": (":", ".")}


@dataclass(frozen=True)
class Point:
    """One finished trial on the score-against-seconds chart."""

    trial: int
    strategy: str
    seconds: float
    score: float


@dataclass(frozen=True)
class Curve:
    """One trial's validation score per epoch."""

    trial: int
    strategy: str
    state: str  # "complete", "pruned", or anything else (running, failed)
    scores: tuple[float, ...]  # epoch 1, 2, ...


def pareto_front(points: Sequence[Point], maximize: bool) -> list[Point]:
    """The points no other point beats on both counts (fewer seconds and a better score),
    cheapest first."""
    sign = 1 if maximize else -1
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.seconds, -sign * p.score)):
        if not front or sign * p.score > sign * front[-1].score:
            front.append(p)
    return front


def strategy_colors(strategies: Sequence[str]) -> dict[str, tuple]:
    """One color per strategy, the same in every chart of the page."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(strategies))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def score_vs_seconds(points: Sequence[Point], front: Sequence[Point], metric: str, chart_id: str) -> str:
    colors = strategy_colors([p.strategy for p in points])
    with _drawing():
        fig, ax = _figure(7.0, 3.8)
        for name, color in colors.items():
            mine = [p for p in points if p.strategy == name]
            ax.scatter([p.seconds for p in mine], [p.score for p in mine], color=color, label=name, zorder=3)
        ax.step([p.seconds for p in front], [p.score for p in front], where="post", color="#444444",
                linewidth=1.2, label="Pareto front", zorder=2)
        ax.scatter([p.seconds for p in front], [p.score for p in front], s=150, facecolors="none",
                   edgecolors="#444444", zorder=4)
        for p in front:
            ax.annotate(f"#{p.trial}", (p.seconds, p.score), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xlabel("seconds (the trial's training and validation)")
        ax.set_ylabel(f"validation {metric}")
        ax.legend(fontsize=8, loc="best")
        return _svg(fig, chart_id, f"validation {metric} against seconds per trial, Pareto front marked")


def validation_curves(curves: Sequence[Curve], metric: str, chart_id: str) -> str:
    from matplotlib.lines import Line2D

    colors = strategy_colors([c.strategy for c in curves])
    with _drawing():
        fig, ax = _figure(7.0, 3.8)
        for c in curves:
            line, marker = CURVE_STYLE.get(c.state, CURVE_STYLE["other"])
            epochs = range(1, len(c.scores) + 1)
            ax.plot(epochs, c.scores, linestyle=line, color=colors[c.strategy], linewidth=1.2, alpha=0.85)
            ax.plot([len(c.scores)], [c.scores[-1]], marker=marker, color=colors[c.strategy], markersize=7)
        states = {c.state if c.state in CURVE_STYLE else "other" for c in curves}
        keys = [Line2D([], [], color=color, label=name) for name, color in colors.items()]
        keys += [Line2D([], [], color="#444444", linestyle=CURVE_STYLE[s][0], marker=CURVE_STYLE[s][1],
                        label="running or failed" if s == "other" else s)
                 for s in CURVE_STYLE if s in states]
        ax.legend(handles=keys, fontsize=8, loc="best")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        return _svg(fig, chart_id, f"validation {metric} per epoch of every trial")


def importance_bars(importances: dict[str, float], chart_id: str) -> str:
    names = list(importances)[::-1]  # the most important on top
    with _drawing():
        fig, ax = _figure(7.0, 0.9 + 0.3 * len(names))
        ax.barh(names, [importances[n] for n in names], color="#4c72b0")
        ax.set_xlabel("importance (share of the score's variation)")
        ax.grid(axis="y", visible=False)
        return _svg(fig, chart_id, "parameter importances")


def confusion_matrix_chart(matrix, labels: Sequence[str], chart_id: str) -> str:
    n = len(labels)
    size = min(14.0, max(3.8, 0.45 * n + 2.0))
    short = [label if len(label) <= 30 else label[:29] + "…" for label in labels]  # full names: the table
    with _drawing():
        fig, ax = _figure(size + 1.0, size)
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.grid(False)
        ax.set_xticks(range(n), short, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
        ax.set_yticks(range(n), short)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:  # beyond that the numbers no longer fit their cells
            top = matrix.max() or 1
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > top / 2 else "black")
        return _svg(fig, chart_id, "confusion matrix of the final model on the test set")


def residual_charts(true: Sequence[float], predicted: Sequence[float], chart_id: str) -> str:
    import numpy as np

    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    with _drawing():
        fig, (left, right) = _figure(9.0, 3.8, columns=2)
        left.scatter(true, predicted, s=12, alpha=0.7)
        low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        left.plot([low, high], [low, high], color="#444444", linewidth=1, label="predicted = true")
        left.set_xlabel("true")
        left.set_ylabel("predicted")
        left.legend(fontsize=8)
        right.scatter(predicted, predicted - true, s=12, alpha=0.7)
        right.axhline(0.0, color="#444444", linewidth=1)
        right.set_xlabel("predicted")
        right.set_ylabel("residual (predicted − true)")
        return _svg(fig, chart_id, "test set: predicted against true, and residuals")


def _drawing():
    import matplotlib

    return matplotlib.rc_context(_RC)  # text objects read text.parse_math when created


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns)


def _svg(fig, chart_id: str, label: str) -> str:
    """The figure as an <svg> element to inline: without the XML prolog and metadata, with
    `chart_id` as its id and every inner id prefixed by it (several charts share one page)."""
    from html import escape

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'(\bid="|url\(#|href="#)', rf"\g<1>{chart_id}-", text)
    return text.replace("<svg ", f'<svg id="{chart_id}" role="img" aria-label="{escape(label)}" ', 1)
