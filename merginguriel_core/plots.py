"""PNG charts for reports: heatmaps, per-row dot plots and grouped scatter plots.

Each function draws one figure with matplotlib's Agg renderer (no window, no global
pyplot state, so it is safe in workers and tests) and writes it atomically
(:func:`merginguriel_core.outputs.atomic_file`): a chart is there whole or not at all.
Fonts shrink and per-cell numbers are left out as tables grow, so a 52 × 52 matrix stays
readable. matplotlib and pandas are imported on first use: importing this module is free.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from merginguriel_core.outputs import atomic_file

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
else:
    from merginguriel_core.lazy import numpy as np

#: Above this many rows or columns a heatmap shows colours only, no number in each cell.
ANNOTATE_LIMIT = 20
#: Rows per panel of a dot plot; more rows are split over panels side by side.
DOT_ROWS_PER_PANEL = 30
#: Markers of the reference series of a dot plot (baselines), drawn hollow in greys.
REFERENCE_MARKERS = ("^", "s", "D", "*", "v", "P", "X")


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure rendered by Agg, ``width`` × ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path, *, replace: bool = True) -> None:
    """Write ``figure`` as a PNG to ``path`` atomically (with ``replace=False`` a file that
    exists at that moment is kept and the error names where the new one went)."""
    with atomic_file(Path(path), "wb", replace=replace) as handle:
        figure.savefig(handle, format="png")


def colours(count: int) -> list:
    """``count`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced hues."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["hsv"](i / count) for i in range(count)]


def _font_size(labels: int) -> float:
    return 8.0 if labels <= ANNOTATE_LIMIT else 6.0 if labels <= 40 else 5.0


def heatmap(frame: pd.DataFrame, path: Path, title: str, *, value_format: str = ".2f", cmap: str = "viridis",
            label: str | None = None, replace: bool = True) -> None:
    """Draw ``frame`` (rows × columns of numbers; NaN is shown grey) as a heatmap PNG at ``path``.

    Index and columns label the axes. Each cell shows its value (``value_format``) while the
    table has at most :data:`ANNOTATE_LIMIT` rows and columns; ``label`` names the colour bar.
    """
    from matplotlib import colormaps

    values = np.asarray(frame.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    rows, columns = values.shape
    size = max(rows, columns)
    font = _font_size(size)
    cell = 0.45 if size <= ANNOTATE_LIMIT else 0.2
    figure = new_figure(max(5.0, cell * columns + 2.5), max(4.0, cell * rows + 1.8))
    axis = figure.add_subplot()
    colour_map = colormaps[cmap].with_extremes(bad="#dddddd")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = axis.imshow(np.ma.masked_invalid(values), cmap=colour_map, vmin=low, vmax=high if high > low else low + 1e-9,
                        aspect="auto", interpolation="nearest")
    axis.set_xticks(range(columns), [str(c) for c in frame.columns], rotation=90, fontsize=font)
    axis.set_yticks(range(rows), [str(r) for r in frame.index], fontsize=font)
    if frame.columns.name:
        axis.set_xlabel(str(frame.columns.name), fontsize=font + 1)
    if frame.index.name:
        axis.set_ylabel(str(frame.index.name), fontsize=font + 1)
    if size <= ANNOTATE_LIMIT:
        for i in range(rows):
            for j in range(columns):
                if math.isfinite(values[i, j]):
                    shade = image.norm(values[i, j])
                    red, green, blue, _ = colour_map(shade)
                    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                    axis.text(j, i, format(values[i, j], value_format), ha="center", va="center",
                              fontsize=font - 1, color="white" if dark else "black")
    bar = figure.colorbar(image, ax=axis, fraction=0.04, pad=0.02)
    bar.ax.tick_params(labelsize=font)
    if label:
        bar.set_label(label, fontsize=font + 1)
    axis.set_title(title, fontsize=font + 3)
    figure.tight_layout()
    save_png(figure, path, replace=replace)


def dot_plot(frame: pd.DataFrame, path: Path, title: str, *, xlabel: str, reference: Sequence[str] = (),
             replace: bool = True) -> None:
    """One row per index entry, one marker per column: a per-row comparison of many series
    that stays legible for many rows (they are split over panels of :data:`DOT_ROWS_PER_PANEL`).

    Columns named in ``reference`` (baselines) are hollow grey markers; the others are
    filled coloured dots, each series nudged vertically within its row so none hides another.
    """
    series = list(frame.columns)
    rows = [str(r) for r in frame.index]
    panels = max(1, math.ceil(len(rows) / DOT_ROWS_PER_PANEL))
    per_panel = math.ceil(len(rows) / panels) if rows else 1
    legend = 0.7 + 0.065 * max((len(str(s)) for s in series), default=0)  # inches beside the panels
    width = 4.8 * panels + legend
    figure = new_figure(width, max(3.0, 0.32 * per_panel + 1.4))
    axes = [figure.add_subplot(1, panels, p + 1) for p in range(panels)]
    methods = [s for s in series if s not in reference]
    palette = dict(zip(methods, colours(len(methods))))
    spread = 0.7 / max(len(series), 1)
    for p, axis in enumerate(axes):
        chunk = list(range(p * per_panel, min(len(rows), (p + 1) * per_panel)))
        for k, name in enumerate(series):
            values = frame[name].to_numpy(dtype=float, na_value=np.nan)[chunk]
            offsets = np.arange(len(chunk)) + (k - (len(series) - 1) / 2) * spread
            if name in reference:
                index = list(reference).index(name) % len(REFERENCE_MARKERS)
                grey = str(0.15 + 0.5 * index / max(len(reference), 1))
                axis.scatter(values, offsets, marker=REFERENCE_MARKERS[index], s=22, facecolors="none",
                             edgecolors=grey, linewidths=0.9, label=name, zorder=2)
            else:
                axis.scatter(values, offsets, marker="o", s=16, color=palette[name], label=name, zorder=3)
        axis.set_yticks(range(len(chunk)), [rows[i] for i in chunk], fontsize=7)
        axis.set_ylim(len(chunk) - 0.5, -0.5)
        axis.grid(axis="x", linewidth=0.4, alpha=0.5)
        axis.tick_params(axis="x", labelsize=7)
        axis.set_xlabel(xlabel, fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1 - legend / width, 1))
    save_png(figure, path, replace=replace)


def grouped_scatter(points: pd.DataFrame, path: Path, title: str, *, x: str, y: str, group: str, xlabel: str,
                    ylabel: str, zero_line: bool = True, replace: bool = True) -> None:
    """One point per row of ``points`` at (``x``, ``y``), one colour per value of ``group``
    (legend outside the axes); a dashed line at y = 0 with ``zero_line``."""
    names = list(dict.fromkeys(points[group]))
    palette = dict(zip(names, colours(len(names))))
    figure = new_figure(8.5, 5.0)
    axis = figure.add_subplot()
    for name in names:
        chosen = points[points[group] == name]
        axis.scatter(chosen[x], chosen[y], s=18, color=palette[name], label=str(name), alpha=0.85)
    if zero_line:
        axis.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    axis.set_xlabel(xlabel, fontsize=9)
    axis.set_ylabel(ylabel, fontsize=9)
    axis.tick_params(labelsize=8)
    axis.grid(linewidth=0.4, alpha=0.5)
    axis.set_title(title, fontsize=10)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    figure.tight_layout()
    save_png(figure, path, replace=replace)
