"""Early stopping versus running every trial to completion, on one small fixed space, in one run.

    python benchmarks/tune_efficiency.py [--trials 16] [--epochs 8] [--reduction-factor 3] [--fsdd DIR]

Both sweeps draw the same configurations (seeded random search) and differ only in
the scheduler: ASHA, or FIFO (every trial runs all its epochs). Prints the compute
each spent (trial-epochs), the best objective each reached, and the ratios. Target:
ASHA within 5% of the exhaustive best for at most half the compute.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def space_dict(scheduler: str, trials: int, epochs: int, reduction_factor: float) -> dict:
    return {
        "base": {"model": "default"},
        "fixed": {"train.epochs": epochs, "train.batch_size": 16},
        "params": {
            "model.latent_dim": {"choice": [8, 16, 32]},
            "loss.recon_weight": {"loguniform": [1.0e2, 1.0e5]},
            "train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]},
        },
        "scheduler": {"type": scheduler, "grace_period": 1, "reduction_factor": reduction_factor},
        "search": {"type": "random", "seed": 0},
        "num_samples": trials,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Asynchronous HyperBand lets the first trials at each rung through for want of
    # competitors; with 8 trials that free pass alone is ~20% of the budget.
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--reduction-factor", type=float, default=3, help="ASHA's, as in tune_spaces/default.yaml")
    p.add_argument("--takes", type=int, nargs="+", default=[0, 1, 5, 6, 7, 8, 9, 10, 11, 12])
    p.add_argument("--fsdd", default=os.environ.get("FSDD_DIR") or str(REPO.parent / "shared" / "fsdd" / "recordings"))
    args = p.parse_args()

    from vae.config import FeatureConfig, preset
    from vae.dataset import extract
    from vae.raysetup import init_ray
    from vae.search_space import parse_space
    from vae.tuning import load_trials, run_sweep

    init_ray()
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        files = sorted(str(f) for f in Path(args.fsdd).glob("*.wav") if int(f.stem.rsplit("_", 1)[1]) in args.takes)
        data = os.path.join(tmp, "features")
        extract(files, data, preset(FeatureConfig, "default"))
        results = {}
        for scheduler in ("fifo", "asha"):
            space = parse_space(
                space_dict(scheduler, args.trials, args.epochs, args.reduction_factor), f"<{scheduler} space>"
            )
            t0 = time.perf_counter()
            run_sweep(space, data, tmp, scheduler, max_concurrent=2)
            trials = load_trials(os.path.join(tmp, scheduler))
            best = min(t.best_row()["objective"] for t in trials if t.best_row())
            results[scheduler] = {
                "trial_epochs": sum(t.epochs for t in trials),
                "best_objective": best,
                "wall_s": round(time.perf_counter() - t0, 1),
                "trials": len(trials),
                "epochs_per_trial": [t.epochs for t in trials],
            }
    full, early = results["fifo"], results["asha"]
    compute = early["trial_epochs"] / full["trial_epochs"]
    gap = early["best_objective"] / full["best_objective"] - 1
    print(f"{len(files)} clips, {args.trials} trials x {args.epochs} epochs, same seeded configurations")
    print(
        f"run to completion : {full['trial_epochs']:4d} trial-epochs, best objective {full['best_objective']:.4f}, {full['wall_s']} s"
    )
    print(
        f"ASHA early stop   : {early['trial_epochs']:4d} trial-epochs, best objective {early['best_objective']:.4f}, {early['wall_s']} s"
    )
    print(f"compute ratio {compute:.2f} (target <= 0.5); best objective {gap:+.1%} vs exhaustive (target within 5%)")
    print(json.dumps({"results": results, "compute_ratio": compute, "objective_gap": gap}))


if __name__ == "__main__":
    main()
