"""Matplotlib figures for run and sweep reports: one look, PNG files, no display.

Every function writes one PNG to ``path`` and returns ``path``; call them with
paths inside the report folder and reference the files relatively.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

SPECTROGRAM_CMAP = "magma"
DIGIT_CMAP = "tab10"
DPI = 100
STYLE = {
    "figure.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


def spectrogram_image(spec: np.ndarray, path: str, scale: int = 2) -> str:
    """A bare spectrogram as a PNG (low frequencies at the bottom), ``scale`` pixels per bin and frame.

    No axes and no figure: cheap enough for a grid of hundreds.
    """
    import matplotlib.image

    img = np.clip(np.asarray(spec, np.float32)[::-1], 0.0, 1.0)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    matplotlib.image.imsave(path, img, cmap=SPECTROGRAM_CMAP, vmin=0.0, vmax=1.0)
    return path


def waveforms(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    sample_rate: int,
    path: str,
    labels=("original", "reconstruction"),
) -> str:
    """One row per ``(title, a, b)``: the two waveforms side by side, each peak-normalised (the vocoder's
    output always is, so only the shapes compare)."""
    plt = _plt()
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 1.8 * len(pairs)), squeeze=False, sharey=True)
    for row, (title, a, b) in zip(axes, pairs):
        for ax, y, label, colour in zip(row, (a, b), labels, ("#1f77b4", "#d62728")):
            y = np.asarray(y, np.float32)
            peak = float(np.max(np.abs(y))) if y.size else 0.0
            t = np.arange(len(y)) / sample_rate
            ax.plot(t, y / peak if peak > 0 else y, lw=0.6, color=colour)
            ax.set_title(f"{title}: {label}")
            ax.set_xlim(0, t[-1] if len(t) else 1)
        row[0].set_ylabel("amplitude / peak")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.tight_layout()
    return _save(fig, path)


def curves(history: Sequence[dict], keys: Sequence[str], path: str, title: str = "") -> str:
    """Training/validation curves: one panel per key, ``train_<key>`` and ``val_<key>`` against epoch."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, key in zip(axes[0], keys):
        for split, style in (("train", "-o"), ("val", "--s")):
            ys = [r.get(f"{split}_{key}") for r in history]
            pts = [(e, y) for e, y in zip(epochs, ys) if isinstance(y, (int, float)) and np.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=split)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def gradient_norms(history: Sequence[dict], clip_norm: float, path: str) -> str:
    """Each epoch's median and largest gradient norm on a log scale, with the clipping limit (if any)."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    rows = [r for r in history if "grad_norm_max" in r]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3))
    ax.plot(epochs, [r["grad_norm_median"] for r in rows], "-o", ms=3, label="median")
    ax.plot(epochs, [r["grad_norm_max"] for r in rows], "--s", ms=3, label="largest")
    if clip_norm > 0:
        ax.axhline(clip_norm, color="grey", lw=1, ls=":", label=f"clip_norm {clip_norm:g}")
    ax.set_yscale("log")
    ax.set_title("gradient norm of a step")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def latent_map(points: np.ndarray, digits: np.ndarray, path: str, title: str) -> str:
    """2-D points coloured by digit, with a digit legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    digits = np.asarray(digits)
    cmap = plt.get_cmap(DIGIT_CMAP)
    for d in range(10):
        sel = digits == d
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=10, color=cmap(d), label=str(d), alpha=0.8, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(title="digit", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.5)
    fig.tight_layout()
    return _save(fig, path)


def count_table(
    table: np.ndarray, path: str, xlabel: str, ylabel: str, title: str, row_labels=None, col_labels=None
) -> str:
    """A heat map of counts with the numbers written in (confusion matrix, component x digit table)."""
    plt = _plt()
    table = np.asarray(table)
    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * cols + 1.8), max(3, 0.4 * rows + 1.2)))
    ax.imshow(table, cmap="Blues", aspect="auto")
    ax.grid(False)
    top = table.max() if table.size else 0
    for i in range(rows):
        for j in range(cols):
            if table[i, j]:
                ax.text(
                    j,
                    i,
                    str(table[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if table[i, j] > top / 2 else "black",
                )
    ax.set_xticks(range(cols), col_labels if col_labels is not None else range(cols))
    ax.set_yticks(range(rows), row_labels if row_labels is not None else range(rows))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.tight_layout()
    return _save(fig, path)


def bars(labels: Sequence[str], series: dict[str, Sequence[float]], path: str, title: str, ylabel: str = "") -> str:
    """Grouped bars: one group per label, one bar per series (e.g. model vs floor per digit)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(labels) * len(series) + 1.5), 3))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels)
    ax.set(title=title, ylabel=ylabel)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)
