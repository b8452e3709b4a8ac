"""Training throughput of one Ray Train worker: today's path against the training path of an
earlier revision, measured in the same run on the same clips, with where the time goes.

    python benchmarks/train_throughput.py --data PARQUET [--model default] [--epochs 3] [--clips 2250]
        [--baseline-rev 5c7c476] [--no-baseline] [--set KEY=VALUE ...]

- baseline: ``--baseline-rev`` (default: the last revision before the training step was reworked)
  checked out in a temporary git worktree, its own ``vae.training.fit`` run in a subprocess on the
  same Parquet subset: per-clip noise, MultiWorkerMirroredStrategy even for one worker, no XLA,
  latent statistics and a checkpoint after every epoch, TensorFlow's own oneDNN choice (this
  process's ``TF_ENABLE_ONEDNN_OPTS`` is not passed on).
- now: this checkout's ``vae.training.fit`` with the default TrainConfig (one worker without
  collectives, the shard held in memory, a checkpoint every ``checkpoint_every`` epochs, TensorFlow's
  oneDNN kernels on as importing ``vae`` sets them, BatchNorm through the fused kernel), plus any
  ``--set`` keys; again with XLA flipped, again with oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0`` in the
  environment of its Ray instance), and again with ``fused_batch_norm`` flipped.
- steps alone: the compiled train step in this process on one fixed batch, with and without XLA:
  the ceiling that feeding and the per-epoch extras eat into.

The first epoch of every run is warm-up (tracing, compilation) and is not counted. Prints the
analytic forward FLOPs per clip of every model preset. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The last revision before "Time to a good model": the training path the 1.5x target is measured against.
BASELINE_REV = "5c7c476"


def flops_table() -> dict[str, dict]:
    from vae.config import FeatureConfig, ModelConfig, preset
    from vae.models import flops_per_clip, layer_costs

    shapes = {"seed": preset(FeatureConfig, "seed").shape, "default": preset(FeatureConfig, "default").shape}
    table = {}
    for name, features in (("seed", "seed"), ("default", "default"), ("tiny", "default")):
        cfg = preset(ModelConfig, name)
        costs = layer_costs(shapes[features], cfg)
        biggest = max(costs, key=lambda c: c.macs)
        table[name] = {
            "input": list(shapes[features]),
            "gflops_per_clip": flops_per_clip(shapes[features], cfg) / 1e9,
            "largest_layer": f"{biggest.name} {biggest.macs / 1e6:.2f} MMAC",
        }
    return table


def summarise(history: list[dict]) -> dict:
    """Train-phase and whole-epoch clips/s over the timed epochs, and seconds per phase per epoch."""
    timed = [m for m in history if m["epoch"] > 1]
    clips = sum(m["train_clips"] for m in timed)
    train_s = sum(m["train_clips"] / m["train_clips_per_s"] for m in timed)
    out = {
        "epochs": len(timed),
        "train_clips_per_s": clips / train_s,
        "epoch_clips_per_s": clips / sum(m["epoch_time_s"] for m in timed),
    }
    for phase in ("train_time_s", "validate_time_s", "checkpoint_time_s", "epoch_time_s"):
        if all(phase in m for m in timed):
            out[phase] = float(np.mean([m[phase] for m in timed]))
    return out


def run_now(data: str, run_cfg, epochs: int, onednn: str | None = None) -> dict:
    """``onednn``: ``TF_ENABLE_ONEDNN_OPTS`` for the workers (which inherit it from the Ray instance
    started here), None for this process's."""
    from vae import ONEDNN_ENV, checkpoint, storage
    from vae.raysetup import finish_ray, init_ray
    from vae.training import fit

    run_cfg = replace(run_cfg, train=replace(run_cfg.train, epochs=epochs + 1, num_workers=1))
    with mock.patch.dict(os.environ, {} if onednn is None else {ONEDNN_ENV: onednn}):
        init_ray()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                result = fit(run_cfg, data, tmp, "throughput")
                history = storage.read_json(storage.join(result.latest_checkpoint, checkpoint.METRICS))["history"]
        finally:
            finish_ray()
    return summarise(history)


BASELINE_SCRIPT = """
import json, sys, tempfile
from dataclasses import replace
from vae import storage
from vae.config import ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.dataset import read_feature_config
from vae.raysetup import init_ray
from vae.training import fit
data, model, epochs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = RunConfig(features=read_feature_config(data), model=preset(ModelConfig, model), prior=PriorConfig(),
                train=TrainConfig(epochs=epochs + 1, batch_size=batch, num_workers=1, checkpoints_to_keep=epochs + 1))
init_ray()
with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
    result = fit(cfg, data, tmp, "throughput")
    history = [storage.read_json(u) for u in storage.list_files(result.run_dir, suffix="metrics.json")]
print(json.dumps(history))
"""


def run_baseline(rev: str, data: str, model: str, epochs: int, batch: int) -> dict:
    """The training path of revision ``rev`` on the same data, in its own worktree and process."""
    from vae import ONEDNN_ENV

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        tree = os.path.join(tmp, "tree")
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", tree, rev], check=True, capture_output=True
        )
        try:
            env = {**os.environ, "PYTHONPATH": tree}
            env.pop("RAY_ADDRESS", None)
            env.pop(ONEDNN_ENV, None)
            proc = subprocess.run(
                [sys.executable, "-c", BASELINE_SCRIPT, data, model, str(epochs), str(batch)],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"baseline run at {rev} failed:\n{proc.stderr[-3000:]}")
            history = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", tree], capture_output=True)
    return summarise(sorted(history, key=lambda m: m["epoch"]))


def step_alone(run_cfg, jit_compile: bool, steps: int = 20) -> float:
    """Clips/s of the compiled train step on one fixed batch, in this process."""
    from vae.models import DistributedSteps, build_vae
    from vae.worker import make_optimizer

    b, dim = run_cfg.train.batch_size, run_cfg.model.latent_dim
    model = build_vae(run_cfg.features.shape, run_cfg.model, run_cfg.prior, run_cfg.loss, features=run_cfg.features)
    optimizer = make_optimizer(run_cfg.train, model.trainable_variables)
    tcfg = run_cfg.train
    train = DistributedSteps(
        model, optimizer, b, jit_compile=jit_compile, clip_norm=tcfg.clip_norm, fused_norm=tcfg.fused_batch_norm
    ).train
    rng = np.random.default_rng(0)
    args = (
        rng.uniform(size=(b, *run_cfg.features.shape)).astype(np.float32),
        (np.arange(b) % 10).astype(np.int32),
        rng.standard_normal((run_cfg.loss.kl_samples, b, dim)).astype(np.float32),
        np.float32(1.0),
    )
    for _ in range(3):
        train(*args)[0].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        train(*args)[0].numpy()
    return steps * b / (time.perf_counter() - t0)


def subset(data: str, clips: int, out: str) -> tuple[str, str]:
    """The first ``clips`` train rows (and all test rows) of ``data``, so every path sees the same
    clips: as a published dataset (today's readers) and as one Parquet file (earlier revisions,
    which predate publishing, read a single file too)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from vae.dataset import parquet_files, write_dataset

    loc, files = parquet_files(data)
    table = pa.concat_tables([pq.read_table(f, filesystem=loc.fs) for f in files]).sort_by("id")
    train = table.filter(pc.equal(table.column("split"), "train")).slice(0, clips)
    test = table.filter(pc.equal(table.column("split"), "test"))
    rows = pa.concat_tables([train, test])
    write_dataset(out, rows, input=data)
    flat = os.path.join(os.path.dirname(out), "subset.parquet")
    # The schema metadata carries the FeatureConfig; min_clip_seconds (an extraction check, not a
    # feature) came after the baseline, whose strict reader would refuse it.
    meta = dict(rows.schema.metadata or {})
    features = json.loads(meta[b"fsdd_vae.features"])
    features.pop("min_clip_seconds", None)
    meta[b"fsdd_vae.features"] = json.dumps(features).encode()
    pq.write_table(rows.replace_schema_metadata(meta), flat)
    return out, flat


def flipped_label(run_cfg) -> str:
    return "XLA on" if run_cfg.train.jit_compile else "XLA off"


def fused_label(run_cfg) -> str:
    return "fused BatchNorm" if run_cfg.train.fused_batch_norm else "Keras' BatchNorm"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset from jobs.preprocess")
    p.add_argument("--model", default="default")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (one more runs first as warm-up)")
    p.add_argument("--clips", type=int, default=2250, help="train clips used")
    p.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision whose training path is the baseline")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for today's runs, e.g. model.decoder_width=0.5; repeatable",
    )
    args = p.parse_args(argv)

    from vae.config import ModelConfig, RunConfig, preset
    from vae.dataset import read_feature_config
    from vae.overrides import apply_overrides, parse_assignment

    flops = flops_table()
    for name, row in flops.items():
        print(
            f"{name:8s} input {row['input']}: {row['gflops_per_clip'] * 1e3:8.2f} MFLOPs/clip forward; largest layer {row['largest_layer']}"
        )

    run_cfg = RunConfig(features=read_feature_config(args.data), model=preset(ModelConfig, args.model))
    run_cfg = apply_overrides(run_cfg, dict(parse_assignment(a) for a in args.set)).validate()
    results: dict = {"model": args.model, "set": args.set, "batch_size": run_cfg.train.batch_size, "flops": flops}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data, flat = subset(args.data, args.clips, os.path.join(tmp, "subset"))
        print(
            f"model {args.model}, batch {run_cfg.train.batch_size}, {args.clips} clips, {args.epochs} timed epochs; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        if not args.no_baseline:
            results["baseline"] = run_baseline(
                args.baseline_rev, flat, args.model, args.epochs, run_cfg.train.batch_size
            )
            print(f"baseline ({args.baseline_rev}): {json.dumps(results['baseline'])}", flush=True)
        results["now"] = run_now(data, run_cfg, args.epochs)
        print(f"now: {json.dumps(results['now'])}", flush=True)
        flipped = replace(run_cfg, train=replace(run_cfg.train, jit_compile=not run_cfg.train.jit_compile))
        results["now_xla_flipped"] = run_now(data, flipped, args.epochs)
        print(f"now, {flipped_label(flipped)}: {json.dumps(results['now_xla_flipped'])}", flush=True)
        results["now_onednn_off"] = run_now(data, run_cfg, args.epochs, onednn="0")
        print(f"now, oneDNN off: {json.dumps(results['now_onednn_off'])}", flush=True)
        unfused = replace(run_cfg, train=replace(run_cfg.train, fused_batch_norm=not run_cfg.train.fused_batch_norm))
        results["now_fused_flipped"] = run_now(data, unfused, args.epochs)
        print(f"now, {fused_label(unfused)}: {json.dumps(results['now_fused_flipped'])}", flush=True)
    for jit in (False, True):
        results[f"step_alone_xla_{'on' if jit else 'off'}"] = step_alone(run_cfg, jit)

    print(f"\n{'path':34s} {'train clips/s':>14s} {'epoch clips/s':>14s}   s/epoch: train  validate  checkpoint")
    now_label = f"now ({flipped_label(run_cfg)}, {fused_label(run_cfg)}{', ' + ' '.join(args.set) if args.set else ''})"
    rows = (
        ("baseline", f"baseline ({args.baseline_rev})"),
        ("now", now_label),
        ("now_xla_flipped", f"now, {flipped_label(flipped)}"),
        ("now_onednn_off", "now, oneDNN off"),
        ("now_fused_flipped", f"now, {fused_label(unfused)}"),
    )
    for key, label in rows:
        r = results.get(key)
        if r:
            phases = "  ".join(
                f"{r[k]:6.1f}" if k in r else "     -" for k in ("train_time_s", "validate_time_s", "checkpoint_time_s")
            )
            print(f"{label:34s} {r['train_clips_per_s']:14.1f} {r['epoch_clips_per_s']:14.1f}   {phases}")
    print(f"{'step alone, no XLA':34s} {results['step_alone_xla_off']:14.1f}")
    print(f"{'step alone, XLA':34s} {results['step_alone_xla_on']:14.1f}")
    if "baseline" in results:
        results["ratio_train"] = results["now"]["train_clips_per_s"] / results["baseline"]["train_clips_per_s"]
        results["ratio_epoch"] = results["now"]["epoch_clips_per_s"] / results["baseline"]["epoch_clips_per_s"]
        print(
            f"now / baseline: {results['ratio_train']:.2f}x train phase, {results['ratio_epoch']:.2f}x whole epochs (target >= 1.5x)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
