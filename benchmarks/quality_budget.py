"""What more compute buys: the default model trained for growing wall-clock budgets, every metric
against minutes of training, as a PNG for the docs.

    python -m benchmarks.quality_budget --data PARQUET --classifier RECOGNISER [--minutes 5 10 20 40]
        [--seed 0] [--held-out-speaker theo] [--variant augmented] [--out benchmarks/results/budget.json]
        [--png docs/img/quality_budget.png]

Each budget is one run of :mod:`benchmarks.quality`'s variant (Ray Train, one worker, the time budget
``minutes * 60`` s), checkpointed as the demo checkpoints; by default the demo's model (the library's
default with speaker augmentation) without the demo's held-out speaker. Each is scored by
``vae.evaluation.run.evaluate_run``. Prints a line per budget as it
ends; the last stdout line is JSON with every row, also written to ``--out``; ``--png`` plots each
metric (and its floor, dashed) against minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from benchmarks.quality import METRICS, VARIANTS, publish, run_variant


def plot(rows: list[dict], path: str) -> None:
    """One small panel per metric: its value against minutes of training, the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 5
    n_rows = -(-len(METRICS) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.6 * n_rows), squeeze=False)
    minutes = [r["minutes"] for r in rows]
    for ax, metric in zip(axes.flat, METRICS):
        values = [r.get(metric) for r in rows]
        ax.plot(minutes, [float("nan") if v is None else v for v in values], "o-")
        floor = rows[0].get(f"{metric}_floor")
        if floor is not None:
            ax.axhline(floor, color="k", ls="--", lw=1)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("minutes of training", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(METRICS) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from vae.config import DemoConfig

    demo = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset (jobs.preprocess, default features)")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20, 40], help="training budgets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="augmented", choices=list(VARIANTS), help="benchmarks.quality variant")
    p.add_argument("--held-out-speaker", default=demo.held_out_speaker, help="a speaker no run trains on")
    p.add_argument("--out", help="also write the JSON with every row to this file")
    p.add_argument("--png", help="plot every metric against minutes into this PNG")
    args = p.parse_args()

    from vae.raysetup import init_ray

    init_ray()
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as tmp:
        for minutes in args.minutes:
            run_args = argparse.Namespace(**vars(args), budget=minutes * 60.0, epochs=0)
            overrides = {**VARIANTS[args.variant], "train.checkpoint_every": demo.checkpoint_every}
            row = run_variant(f"{args.variant}-{minutes:g}min", overrides, args.seed, run_args, tmp)
            rows.append({"minutes": minutes, **row})
            print(json.dumps(rows[-1]), flush=True)
    document = {
        "variant": args.variant,
        "seed": args.seed,
        "held_out_speaker": args.held_out_speaker,
        "rows": rows,
    }
    if args.png:
        plot(rows, args.png)
    publish(document, args.out, "benchmarks.quality_budget")


if __name__ == "__main__":
    main()
