"""Figures written next to a run's outputs (matplotlib's object API: no global backend state).

matplotlib is imported by the functions that draw (about a second), not by ``import hf_prune``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Curves = Mapping[str, Sequence[tuple[float, float]]]
#: y-axis label of each kind of prunable unit (``ChannelGroup.kind``)
UNIT_AXIS_LABELS = {"head": "attention heads", "channel": "channels / hidden units"}


def plot_layer_widths(
    widths: Mapping[str, tuple[int, int, str]], path: str, title: str = "Kept units per group"
) -> str:
    """Original and kept units of every group, in the order given (model order), one panel per unit kind.

    Heads and channels differ by orders of magnitude (4 heads, 128 MLP units), so each kind gets
    its own panel and y axis. Groups that kept everything show a full bar.

    Args:
        widths: group name -> (original units, kept units, kind), kind as ``ChannelGroup.kind``.
        path: PNG file to write (atomically).
    """
    kinds = sorted({kind for _, _, kind in widths.values()}, key=lambda kind: kind != "head")
    most = max(sum(w[2] == kind for w in widths.values()) for kind in kinds)
    figure = _figure(max(6.0, 0.3 * most + 2), 1.0 + 3.2 * len(kinds))
    for axes, kind in zip(figure.subplots(len(kinds), 1, squeeze=False)[:, 0], kinds):
        names = [name for name, (_, _, k) in widths.items() if k == kind]
        positions = range(len(names))
        axes.bar(positions, [widths[n][0] for n in names], color="#d0d7e1", label="original")
        axes.bar(positions, [widths[n][1] for n in names], color="#3b6ea5", label="kept")
        axes.set_xticks(list(positions), names, rotation=90, fontsize=7)
        axes.set_xlim(-0.6, len(names) - 0.4)
        axes.set_ylabel(UNIT_AXIS_LABELS.get(kind, kind))
        axes.legend(loc="upper left", fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def plot_panels(
    panels: Mapping[str, Curves],
    path: str,
    *,
    xlabel: str,
    title: str,
    markers: Mapping[str, float] | None = None,
    events: Sequence[float] = (),
    event_label: str = "event",
) -> str:
    """Named (x, y) series stacked in panels over one x axis, one panel (and y axis) per quantity.

    Args:
        panels: y-axis label -> {series label: points}; empty series and panels are left out.
        markers: a few labelled vertical lines (e.g. "prune" at an epoch), each in the legend.
        events: any number of unlabelled vertical lines (e.g. LAASP's 50 prune steps), one legend entry.
    """
    shown = {label: curves for label, curves in panels.items() if any(curves.values())}
    figure = _figure(6.4, 0.8 + 2.6 * len(shown))
    rows = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (ylabel, curves) in zip(rows, shown.items()):
        for label, points in curves.items():
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="o", markersize=3, label=label)
        _mark(axes, markers or {}, events, event_label)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    rows[-1].set_xlabel(xlabel)
    figure.suptitle(title)
    return _save(figure, path)


def plot_curves(
    curves: Curves,
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    markers: Mapping[str, float] | None = None,
) -> str:
    """Line plot of named (x, y) series on one y axis, with optional labelled vertical markers."""
    return plot_panels({ylabel: curves}, path, xlabel=xlabel, title=title, markers=markers)


def plot_scatter(groups: Curves, path: str, *, xlabel: str, ylabel: str, title: str) -> str:
    """Scatter plot, one marker style per named group of (x, y) points (e.g. accuracy vs MACs per method)."""
    figure = _figure(6.4, 4.4)
    axes = figure.subplots()
    for (label, points), marker in zip(groups.items(), "os^Dv<>pP*X"):
        if points:
            xs, ys = zip(*points)
            axes.scatter(xs, ys, marker=marker, s=40, label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _mark(axes: Axes, markers: Mapping[str, float], events: Sequence[float], event_label: str) -> None:
    """Vertical lines: each marker its own style and legend entry; all events one style, one entry."""
    for (label, x), style in zip(markers.items(), ("--", ":", "-.", (0, (5, 1)))):
        axes.axvline(x, color="gray", linestyle=style, linewidth=1.2, label=label)
    for index, x in enumerate(events):
        label = (event_label if len(events) == 1 else f"{event_label} ({len(events)})") if index == 0 else None
        axes.axvline(x, color="#c0392b", alpha=0.5, linewidth=0.8, label=label)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path
