"""Figures written next to a run's outputs (matplotlib's object API: no global backend state).

matplotlib is imported by the functions that draw (about a second), not by ``import hf_prune``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_layer_widths(widths: Mapping[str, tuple[int, int]], path: str, title: str = "Kept width per group") -> str:
    """Bar chart of every pruned group's original and kept number of units, in model order.

    Args:
        widths: group name -> (original units, kept units).
        path: PNG file to write (atomically).
    """
    names = list(widths)
    figure = _figure(max(6.0, 0.28 * len(names) + 2), 4.0)
    axes = figure.subplots()
    positions = range(len(names))
    axes.bar(positions, [widths[n][0] for n in names], color="#d0d7e1", label="original")
    axes.bar(positions, [widths[n][1] for n in names], color="#3b6ea5", label="kept")
    axes.set_xticks(list(positions), names, rotation=90, fontsize=7)
    axes.set_ylabel("channels / heads")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def plot_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    markers: Mapping[str, float] | None = None,
) -> str:
    """Line plot of named (x, y) series, with optional labelled vertical markers (e.g. the prune epoch)."""
    figure = _figure(6.4, 4.0)
    axes = figure.subplots()
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o", markersize=3, label=label)
    for label, x in (markers or {}).items():
        axes.axvline(x, color="gray", linestyle="--", linewidth=1)
        axes.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=8)
    return _save_labelled(figure, axes, path, xlabel, ylabel, title)


def plot_scatter(
    groups: Mapping[str, Sequence[tuple[float, float]]], path: str, *, xlabel: str, ylabel: str, title: str
) -> str:
    """Scatter plot, one marker style per named group of (x, y) points (e.g. accuracy vs MACs per method)."""
    figure = _figure(6.4, 4.4)
    axes = figure.subplots()
    for (label, points), marker in zip(groups.items(), "os^Dv<>pP*X"):
        if points:
            xs, ys = zip(*points)
            axes.scatter(xs, ys, marker=marker, s=40, label=label)
    return _save_labelled(figure, axes, path, xlabel, ylabel, title)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save_labelled(figure: Figure, axes, path: str, xlabel: str, ylabel: str, title: str) -> str:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _save(figure: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path
