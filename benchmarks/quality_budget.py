"""What more compute buys: the default model trained for growing wall-clock budgets, every metric
against minutes of training, as a PNG for the docs.

    python -m benchmarks.quality_budget --data PARQUET --classifier RECOGNISER [--minutes 5 10 20 40]
        [--seed 0] [--held-out-speaker theo] [--variant demo] [--out benchmarks/results/budget.json]
        [--png docs/img/quality_budget.png] [--keep DIR | --run RUN] [--set sampling.KEY=VALUE ...]

One run of :mod:`benchmarks.quality`'s variant (Ray Train, one worker) for the longest budget,
checkpointed as the demo checkpoints, every checkpoint kept; by default the demo's model without the
demo's held-out speaker. Each budget is scored (``vae.evaluation.run.evaluate_run``) on the checkpoint a
run of that budget keeps, the best by validation loss of those written within its minutes: nothing in
training depends on the budget when the learning rate is constant (a schedule over the budget is
refused), so the first minutes of a long run are a short run, and the curve costs the longest budget
once instead of their sum. ``--keep DIR`` keeps the run; ``--run RUN`` scores a kept run again instead of
training (after a change to how it decodes: ``--set sampling.KEY=VALUE``). Prints a line per budget; the last stdout line is JSON with every row, also
written to ``--out``; ``--png`` plots each metric (and its floor, dashed) against minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from benchmarks.quality import METRICS, VARIANTS, decoding, publish, score_checkpoint, train_variant


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


def within(checkpoints: list[tuple[str, dict]], seconds: float) -> tuple[int, str, dict]:
    """What a run of ``seconds`` keeps of a longer run's ``checkpoints`` (``vae.checkpoint.run_checkpoints``):
    the epochs it trains, and the best checkpoint by validation loss written within them with its metrics."""
    from vae.objective import SCORE_METRIC

    history = checkpoints[-1][1].get("history", [])
    epochs = max((int(h["epoch"]) for h in history if h["elapsed_s"] <= seconds), default=0)
    kept = [(uri, m) for uri, m in checkpoints if m["epoch"] <= epochs]
    if not kept:
        raise SystemExit(f"no checkpoint within {seconds:.0f} s: lower train.checkpoint_every or raise --minutes")
    uri, metrics = min(kept, key=lambda cm: cm[1][SCORE_METRIC])
    return epochs, uri, metrics


def main() -> None:
    from vae.config import DemoConfig

    demo = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset (jobs.preprocess, default features)")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20, 40], help="training budgets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="demo", choices=list(VARIANTS), help="benchmarks.quality variant")
    p.add_argument("--held-out-speaker", default=demo.held_out_speaker, help="a speaker no run trains on")
    p.add_argument("--out", help="also write the JSON with every row to this file")
    p.add_argument("--png", help="plot every metric against minutes into this PNG")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--keep", help="train into this folder and keep the run (default: a temporary one, removed)")
    where.add_argument("--run", help="score this kept run (its folder, from --keep) instead of training")
    p.add_argument(
        "--set", action="append", default=[], metavar="sampling.KEY=VALUE", help="decode with these sampling choices"
    )
    args = p.parse_args()
    sampling = decoding(p, args.set)
    overrides = {
        **VARIANTS[args.variant],
        "train.checkpoint_every": demo.checkpoint_every,
        "train.checkpoints_to_keep": 1000,
    }
    if overrides.get("train.lr_schedule", "constant") != "constant":
        p.error(
            f"variant {args.variant!r} schedules its learning rate over the budget: its short runs are not a long run's start"
        )

    from vae import checkpoint
    from vae.raysetup import init_ray

    rows, scored = [], {}
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as tmp:
        run_dir = args.run
        if not run_dir:
            init_ray()
            run_args = argparse.Namespace(**vars(args), budget=max(args.minutes) * 60.0, epochs=0)
            run_dir = train_variant(args.variant, overrides, args.seed, run_args, args.keep or tmp)[0].run_dir
        checkpoints = checkpoint.run_checkpoints(run_dir)
        for minutes in sorted(args.minutes):
            epochs, uri, metrics = within(checkpoints, minutes * 60.0)
            if uri not in scored:
                scored[uri] = score_checkpoint(uri, args.data, args.classifier, sampling)
            row = {"variant": args.variant, "seed": args.seed, "epochs": epochs, "best_epoch": metrics["epoch"]}
            rows.append({"minutes": minutes, **row, **scored[uri]})
            print(json.dumps(rows[-1]), flush=True)
    document = {
        "variant": args.variant,
        "seed": args.seed,
        "held_out_speaker": args.held_out_speaker,
        "one_run": True,
        "sampling": sampling,
        "rows": rows,
    }
    if args.png:
        plot(rows, args.png)
    publish(document, args.out, "benchmarks.quality_budget")


if __name__ == "__main__":
    main()
