"""The sweep report: ranked trials, curves, parameter effects and the best model's voice.

Built from the experiment's storage alone (``vae.tuning.load_trials``), so
``python -m jobs.report --experiment <storage>/<EXP>`` can rebuild it for any
past sweep. Everything is written to a local folder first and then copied to
``<EXP>/report/``; every image and audio file is referenced relatively.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile

import numpy as np

from vae import compat, storage
from vae.objective import describe
from vae.reports.html import Cell, Page, fmt
from vae.reports.plots import spectrogram_image

HEADLINE = (
    "objective",
    "val_recon_mse",
    "val_unexplained_variance",
    "digit_accuracy",
    "voicing_samples",
    "held_out_recon_mse",
    "val_kl",
)


def _short(key: str) -> str:
    return key.split(".", 1)[-1]


def trial_rows(trials, max_epochs: int | None) -> list[dict]:
    rows = []
    for rank, t in enumerate(trials, 1):
        best = t.best_row() or {}
        stopped = ""
        if t.status == "TERMINATED" and t.last.get("stopped_by_time_budget"):
            stopped = f"stopped by its time budget after epoch {t.epochs}"
        elif t.status == "TERMINATED" and t.last.get("stopped_by_patience"):
            stopped = f"stopped after epoch {t.epochs}: no better checkpoint for train.patience checkpoints"
        elif t.status == "TERMINATED" and max_epochs and 0 < t.epochs < max_epochs:
            stopped = f"early-stopped by the scheduler after epoch {t.epochs}"
        elif t.status == "ERROR":
            stopped = f"failed: {t.error or 'see Tune logs'}"
        elif t.status not in ("TERMINATED",):
            stopped = t.status.lower()
        row = {"rank": rank, "trial_id": t.trial_id, "status": t.status, "epochs": t.epochs, "note": stopped}
        row.update({_short(k): v for k, v in sorted(t.params.items())})
        row.update({k: best.get(k) for k in HEADLINE})
        row["best_epoch"] = best.get("epoch")
        rows.append(row)
    return rows


def _plot_curves(trials, path: str, metric: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for t in trials:
        xs = [r["epoch"] for r in t.history if isinstance(r.get(metric), (int, float))]
        ys = [r[metric] for r in t.history if isinstance(r.get(metric), (int, float))]
        if xs:
            ax.plot(xs, ys, marker="o", ms=3, label=t.trial_id)
            drawn = True
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial")
    if drawn and len(trials) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _is_log(values) -> bool:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    return len(nums) > 1 and max(nums) / min(nums) >= 100


def _axis(values) -> tuple[np.ndarray, list[str] | None]:
    """Values to plot on one axis: numbers as they are, anything else (prior kinds, booleans) as
    the positions of its sorted distinct labels, returned with those labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float), None
    labels = sorted({str(v) for v in values})
    return np.asarray([labels.index(str(v)) for v in values], dtype=float), labels


def _plot_effects(trials, keys: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [t for t in trials if t.best_row()]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        raw = [t.params.get(key) for t in scored]
        xs, labels = _axis(raw)
        ys = [t.best_row()["objective"] for t in scored]
        ax.scatter(xs, ys, c=ys, cmap="viridis")
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels)
        elif _is_log(raw):
            ax.set_xscale("log")
        ax.set_xlabel(_short(key))
        ax.set_ylabel("best objective (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_parallel(trials, keys: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [t for t in trials if t.best_row()]
    axes_keys = keys + ["objective"]
    cols = []
    for key in axes_keys:
        raw = [t.best_row()["objective"] if key == "objective" else t.params.get(key) for t in scored]
        vals, labels = _axis(raw)
        if labels is None and key != "objective" and _is_log(raw):
            vals = np.log10(vals)
        lo, hi = (vals.min(), vals.max()) if len(vals) else (0, 1)
        cols.append((vals - lo) / (hi - lo) if hi > lo else np.full_like(vals, 0.5))
    fig, ax = plt.subplots(figsize=(1.8 * len(axes_keys) + 1, 4))
    if scored:
        obj = np.asarray([t.best_row()["objective"] for t in scored])
        norm = (obj - obj.min()) / (obj.max() - obj.min()) if obj.max() > obj.min() else np.zeros_like(obj)
        cmap = plt.get_cmap("viridis")
        for i in np.argsort(-norm):
            ax.plot(
                range(len(axes_keys)), [c[i] for c in cols], color=cmap(norm[i]), lw=2 if norm[i] == 0 else 1, alpha=0.8
            )
    ax.set_xticks(range(len(axes_keys)))
    ax.set_xticklabels([_short(k) for k in axes_keys])
    ax.set_yticks([])
    ax.set_title("parallel coordinates (each axis min-max scaled; log axes for wide ranges; dark = better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _best_samples(best_uri: str | None, out: str) -> list[dict]:
    """Copy best/samples/<digit>_*.wav into the report (under names from :func:`vae.storage.safe_name`:
    storage keys never decide where a file goes) and draw each one's spectrogram."""
    if not best_uri:
        return []
    from vae.checkpoint import CONFIG as CONFIG_FILE
    from vae.evaluation.audio import to_spectrograms
    from vae.features import decode_audio

    base = storage.published(best_uri)
    samples_uri = storage.join(base, "samples")
    if not storage.exists(samples_uri):
        return []
    cfg = compat.run_config(storage.read_json(storage.join(base, CONFIG_FILE))).features
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    items = []
    for rel, uri in storage.walk_files(samples_uri):
        digit = re.match(r"(\d)_[^/]*\.wav$", rel)
        if not digit:
            continue
        try:
            data = storage.read_bytes(uri)
        except storage.StorageError:
            continue  # a key storage.resolve refuses (e.g. with '..' segments) is nothing publish_best wrote
        wav = "samples/" + storage.safe_name(rel)
        with open(os.path.join(out, wav), "wb") as f:
            f.write(data)
        spec = to_spectrograms([decode_audio(data, cfg).waveform], cfg.sample_rate, cfg)[0]
        png = wav[:-4] + ".png"
        spectrogram_image(spec, os.path.join(out, png))
        items.append({"digit": int(digit.group(1)), "wav": wav, "png": png})
    return sorted(items, key=lambda i: (i["digit"], i["wav"]))


def build_sweep_report(exp_uri: str, trials, best: dict | None) -> str:
    """Write ``<EXP>/report/`` (index.html, summary.json, trials.csv, report.md) and return its URI."""
    sweep_uri = storage.join(exp_uri, "sweep.json")
    sweep = compat.sweep(storage.read_json(sweep_uri)) if storage.exists(sweep_uri) else {}
    param_keys = sorted({k for t in trials for k in t.params})
    max_epochs = None
    if sweep.get("base"):
        from vae.search_space import load_space

        try:
            max_epochs = load_space(sweep["space"]).run_config({}, _base(sweep)).train.epochs
        except Exception:  # the space file may not exist where the report is rebuilt
            max_epochs = max((t.epochs for t in trials), default=None)
    rows = trial_rows(trials, max_epochs)
    best_uri = storage.join(exp_uri, "best") if best else None
    report_uri = storage.join(exp_uri, "report")
    with tempfile.TemporaryDirectory(prefix="fsdd-vae-report-") as out:
        _plot_curves(trials, os.path.join(out, "curves_objective.png"), "objective")
        _plot_curves(trials, os.path.join(out, "curves_val_recon_mse.png"), "val_recon_mse")
        _plot_effects(trials, param_keys, os.path.join(out, "effects.png"))
        _plot_parallel(trials, param_keys, os.path.join(out, "parallel.png"))
        samples = _best_samples(best_uri, out)

        fields = list(rows[0]) if rows else ["rank", "trial_id"]
        with open(os.path.join(out, "trials.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        summary = {
            "experiment": exp_uri,
            "metric": "objective (min)",
            "objective": describe(
                tuple(sweep.get("settings", {}).get("objective", ())), bool(sweep.get("recogniser", True))
            ),
            "trials": len(trials),
            "status_counts": {s: sum(t.status == s for t in trials) for s in sorted({t.status for t in trials})},
            "trial_epochs": sum(t.epochs for t in trials),
            "best": best,
            "best_checkpoint": best_uri,
            "sweep": sweep,
        }
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(_markdown(exp_uri, rows, best, best_uri, summary))
        _html(exp_uri, rows, best, best_uri, summary, samples).write(out)
        storage.copy_tree(out, report_uri)
    return report_uri


def _base(sweep: dict):
    from vae.config import RunConfig, from_dict

    return from_dict(RunConfig, sweep["base"])


def _markdown(exp_uri, rows, best, best_uri, summary) -> str:
    lines = [f"# Sweep report: {exp_uri}", ""]
    lines.append(
        f"{summary['trials']} trials, {summary['trial_epochs']} trial-epochs; statuses {summary['status_counts']}."
    )
    lines.append("Objective (lower is better): " + summary["objective"] + ".")
    if best:
        lines += [
            "",
            f"**Best:** trial `{best['trial_id']}` epoch {best['metrics'].get('epoch')}, objective "
            f"{fmt(best['metrics'].get('objective'))}; published at `{best_uri}`.",
            "Params: " + ", ".join(f"`{k}={fmt(v)}`" for k, v in sorted(best["params"].items())),
        ]
    if rows:
        keys = list(rows[0])
        lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html(exp_uri, rows, best, best_uri, summary, samples) -> Page:
    page = Page(
        "Sweep report",
        f"{exp_uri}: {summary['trials']} trials, {summary['trial_epochs']} trial-epochs, "
        f"statuses {summary['status_counts']}",
    )
    page.text("Ranked by the weight-independent objective (lower is better): " + summary["objective"] + ".")
    if best:
        m = best["metrics"]
        page.heading("Best configuration")
        page.bullets(f"{k} = {fmt(v)}" for k, v in sorted(best["params"].items()))
        page.text(
            f"Trial {best['trial_id']}, epoch {m.get('epoch')}: "
            + ", ".join(f"{k} {fmt(m.get(k))}" for k in HEADLINE if m.get(k) is not None)
            + f". Published to {best_uri}; generate with:"
        )
        page.code(f"python -m jobs.generate --checkpoint {best_uri} --out OUT --n 5 --digit 7")
    page.heading("Trials")
    header = list(rows[0]) if rows else []
    best_index = [i for i, r in enumerate(rows) if best and r["trial_id"] == best["trial_id"]]
    page.table(header, [list(r.values()) for r in rows], highlight=best_index)
    page.heading("Learning curves")
    page.row(
        ("curves_objective.png", "objective per epoch"),
        ("curves_val_recon_mse.png", "validation reconstruction per epoch"),
    )
    page.heading("Hyperparameters")
    page.image(
        "parallel.png", "parallel coordinates", "each axis min-max scaled, log axes for wide ranges; dark = better"
    )
    page.image(
        "effects.png", "effect of each hyperparameter", "best objective of each trial against each hyperparameter"
    )
    if samples:
        page.heading("Best model: samples per digit")
        by_digit: dict[int, list[Cell]] = {}
        for s in samples:
            by_digit.setdefault(s["digit"], []).append(
                Cell(image=s["png"], audio=s["wav"], caption=os.path.basename(s["wav"]))
            )
        page.grid([f"digit {d}" for d in sorted(by_digit)], [by_digit[d] for d in sorted(by_digit)])
    return page
