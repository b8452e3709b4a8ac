"""A sweep's trials as a results JSON for the docs' tables: each trial's searched values and its best
epoch's objective terms, and the listeners' metrics (``jobs.evaluate``'s) of its best checkpoint.

    python -m benchmarks.sweep_results --experiment OUT/NAME --data PARQUET --classifier RECOGNISER
        [--evaluate 3] [--out benchmarks/results/voice_sweep.json]

``--evaluate N`` scores the best checkpoints of the N best trials with ``vae.evaluation.run.evaluate_run``
(digit accuracy, Frechet distance, voicing, PESQ, the held-out speaker's test takes; under ``evaluation``,
on more samples than the objective's): whether what the objective ranks first is what listeners would. The last stdout line is the JSON; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse

from benchmarks.quality import publish, score_checkpoint

TERMS = ("objective", "val_unexplained_variance", "digit_accuracy", "voicing_samples", "held_out_unexplained_variance")


def trial_rows(exp_uri: str, val_variance: float) -> list[dict]:
    """Per trial, best first: its searched values, epochs, and its best epoch's terms and checkpoint (the
    held-out speaker's reconstruction error as the objective adds it, a share of ``val_variance``)."""
    from vae import storage
    from vae.tuning import load_trials

    rows = []
    for t in load_trials(exp_uri):
        best = t.best_row() or {}
        checkpoint = best.get("checkpoint_path")
        if best.get("held_out_recon_mse") is not None:
            best = {**best, "held_out_unexplained_variance": best["held_out_recon_mse"] / val_variance}
        rows.append(
            {
                "trial_id": t.trial_id,
                "status": t.status,
                "params": t.params,
                "epochs": t.epochs,
                "best_epoch": best.get("epoch"),
                **{k: best.get(k) for k in TERMS},
                "checkpoint": checkpoint and storage.ray_uri(checkpoint),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the sweep's folder (OUT/NAME of jobs.tune)")
    p.add_argument("--data", help="Parquet dataset the sweep trained on (for --evaluate)")
    p.add_argument("--classifier", help="recogniser checkpoint (for --evaluate)")
    p.add_argument("--evaluate", type=int, default=0, help="score the best checkpoints of this many best trials")
    p.add_argument("--out", help="also write the JSON to this file")
    args = p.parse_args()
    if args.evaluate and not (args.data and args.classifier):
        p.error("--evaluate needs --data and --classifier")

    from vae import storage

    sweep = storage.read_json(storage.join(args.experiment, "sweep.json"))
    rows = trial_rows(args.experiment, sweep["val_variance"])
    for row in rows[: args.evaluate]:
        if row["checkpoint"] and storage.exists(row["checkpoint"]):
            row["evaluation"] = score_checkpoint(row["checkpoint"], args.data, args.classifier)
    document = {
        "space": sweep["space"],
        "objective": sweep["settings"].get("objective", []),
        "voicing_floor": sweep.get("voicing_floor"),
        "held_out_speaker": sweep["base"]["train"].get("held_out_speaker", ""),
        "rows": rows,
    }
    publish(document, args.out, "benchmarks.sweep_results")


if __name__ == "__main__":
    main()
