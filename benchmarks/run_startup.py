"""What a training run costs before and after its epochs: ``vae.training.fit`` of the ``tiny`` model
(one epoch, so nearly all of it is start-up and teardown) at this checkout and at an earlier revision,
each in its own process and local Ray instance, on the same published dataset, in alternating rounds.

    python -m benchmarks.run_startup --data PARQUET [--before REV] [--rounds 2] [--fits 2]

Every sweep trial and every ``jobs.train`` pays this once, and CI pays it for each run it starts.
Each process times ``--fits`` runs one after another: the first also pays Ray's cold worker pool,
the later ones are what each further trial of a sweep pays; the whole process (Ray's start and
shutdown included) is timed too. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What "before" means unless --before says otherwise.
BEFORE_REV = "HEAD"

FITS_SCRIPT = r"""
import json, sys, tempfile, time
from vae.config import RunConfig, ModelConfig, TrainConfig, preset
from vae.raysetup import finish_ray, init_ray
from vae.training import fit
data, fits = sys.argv[1], int(sys.argv[2])
init_ray(2)
cfg = RunConfig(model=preset(ModelConfig, "tiny"), train=TrainConfig(epochs=1, batch_size=16, max_failures=0))
seconds = []
with tempfile.TemporaryDirectory() as runs:
    for i in range(fits):
        started = time.perf_counter()
        fit(cfg, data, runs, f"r{i}")
        seconds.append(time.perf_counter() - started)
finish_ray()
print(json.dumps(seconds))
"""


def time_fits(tree: str, data: str, fits: int) -> list[float]:
    """Each fit's seconds, then the whole process's (interpreter, imports, Ray's start and shutdown)."""
    env = {**os.environ, "PYTHONPATH": tree}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", FITS_SCRIPT, data, str(fits)], cwd=tree, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fits in {tree} failed:\n{proc.stderr[-3000:]}")
    return [*json.loads(proc.stdout.strip().splitlines()[-1]), time.perf_counter() - started]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a published dataset (jobs.preprocess output)")
    ap.add_argument("--before", default=BEFORE_REV, help="the revision to compare with (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fits", type=int, default=2, help="runs per process (default %(default)s)")
    args = ap.parse_args(argv)

    times: dict[str, list[list[float]]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        before = os.path.join(tmp, "before")
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", before, args.before],
            check=True,
            capture_output=True,
        )
        try:
            for r in range(args.rounds):
                for label, tree in (("before", before), ("now", str(REPO))):
                    times[label].append(time_fits(tree, args.data, args.fits))
                    print(
                        f"round {r + 1}/{args.rounds} {label}: " + ", ".join(f"{s:.1f} s" for s in times[label][-1]),
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", before], capture_output=True)

    summary = {}
    for label, runs in times.items():
        first = [t[0] for t in runs]
        later = [s for t in runs for s in t[1:-1]] or first  # --fits 1: every run is a first one
        summary[label] = {
            "first_fit_s": statistics.median(first),
            "later_fit_s": statistics.median(later),
            "process_s": statistics.median(t[-1] for t in runs),
        }
    print(f"\n| one-epoch tiny run | {args.before} | now | saved |\n|---|---|---|---|")
    for key, name in (
        ("first_fit_s", "first in the process"),
        ("later_fit_s", "each later one"),
        ("process_s", f"the process, {args.fits} runs"),
    ):
        b, n = summary["before"][key], summary["now"][key]
        print(f"| {name} | {b:.1f} s | {n:.1f} s | {b - n:.1f} s ({b / n:.2f}x) |")
    print(json.dumps({"before_rev": args.before, "rounds": args.rounds, "fits": args.fits, "times": times, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
