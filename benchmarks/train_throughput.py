"""Training throughput: one Ray Train worker running vae.training's step vs a plain Keras loop.

    python benchmarks/train_throughput.py --data PARQUET [--model default] [--batch-size 32]
        [--epochs 2] [--clips 1024]

Both paths train the same model at the same batch size on the same clips of the
train split, in this one run: first ``model.fit`` in this process (no Ray, no
distribution strategy), then ``vae.training.fit`` with one worker
(TensorflowTrainer, MultiWorkerMirroredStrategy, Ray Data shard feeding, the
per-example-noise step). The first epoch of each is warm-up (tracing) and is not
counted. Also prints the analytic forward FLOPs per clip of every model preset.
The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np


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
            "last_decoder_layer": f"{costs[-1].name} {costs[-1].macs / 1e6:.2f} MMAC",
        }
    return table


def plain_keras(spectrograms: np.ndarray, run_cfg, epochs: int) -> float:
    """Clips/s of ``model.fit`` in this process, warm-up epoch excluded."""
    from vae.models import build_vae
    from vae.training import make_optimizer

    vae = build_vae(run_cfg.features.shape, run_cfg.model, run_cfg.prior, seed=run_cfg.train.seed)
    vae.compile(optimizer=make_optimizer(run_cfg.train))
    batch = run_cfg.train.batch_size
    n = (len(spectrograms) // batch) * batch
    vae.fit(spectrograms[:n], batch_size=batch, epochs=1, verbose=0, shuffle=True)
    t0 = time.perf_counter()
    vae.fit(spectrograms[:n], batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
    return n * epochs / (time.perf_counter() - t0)


def ray_train(data: str, run_cfg, epochs: int) -> tuple[float, float]:
    """(train-phase clips/s, whole-epoch clips/s incl. validation and latent statistics) of one Ray Train worker."""
    from vae import checkpoint, storage
    from vae.training import fit

    run_cfg = replace(run_cfg, train=replace(run_cfg.train, epochs=epochs + 1, num_workers=1, checkpoints_to_keep=epochs + 1))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = fit(run_cfg, data, tmp, "throughput")
        history = []
        for uri in storage.list_files(result.run_dir, suffix=checkpoint.METRICS):
            history.append(storage.read_json(uri))
    timed = [m for m in history if m["epoch"] > 1]
    clips = sum(m["train_clips"] for m in timed)
    return clips / sum(m["train_clips"] / m["train_clips_per_s"] for m in timed), clips / sum(m["epoch_time_s"] for m in timed)


def subset(data: str, clips: int, out: str) -> str:
    """The first ``clips`` train rows (and all test rows) of ``data`` as a new Parquet, so both paths see the same clips."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from vae.dataset import parquet_files, write_dataset

    loc, files = parquet_files(data)
    table = pa.concat_tables([pq.read_table(f, filesystem=loc.fs) for f in files]).sort_by("id")
    train = table.filter(pc.equal(table.column("split"), "train")).slice(0, clips)
    test = table.filter(pc.equal(table.column("split"), "test"))
    write_dataset(out, pa.concat_tables([train, test]), input=data)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset from jobs.preprocess")
    p.add_argument("--model", default="default")
    p.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig.batch_size")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (one more runs first as warm-up)")
    p.add_argument("--clips", type=int, default=1024, help="train clips used")
    args = p.parse_args(argv)

    from vae.config import ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.raysetup import init_ray

    flops = flops_table()
    for name, row in flops.items():
        print(f"{name:8s} input {row['input']}: {row['gflops_per_clip'] * 1e3:8.2f} MFLOPs/clip forward; largest layer {row['largest_layer']}; "
              f"last decoder layer {row['last_decoder_layer']}")
    print(f"default / seed FLOPs: {flops['default']['gflops_per_clip'] / flops['seed']['gflops_per_clip']:.3f}")

    train_cfg = TrainConfig() if args.batch_size is None else TrainConfig(batch_size=args.batch_size)
    run_cfg = RunConfig(features=read_feature_config(args.data), model=preset(ModelConfig, args.model), prior=PriorConfig(), train=train_cfg)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data = subset(args.data, args.clips, tmp)
        spectrograms = load_split_numpy(data, "train", columns=["spectrogram"])["spectrogram"]
        print(f"model {args.model}, batch {run_cfg.train.batch_size}, {len(spectrograms)} clips, {args.epochs} timed epochs; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        # Plain, Ray, plain again: the machine may be shared, so the baseline brackets the Ray run.
        before = plain_keras(spectrograms, run_cfg, args.epochs)
        print(f"plain Keras model.fit (before): {before:8.1f} clips/s", flush=True)
        init_ray()
        ray_step, ray_epoch = ray_train(data, run_cfg, args.epochs)
        import ray

        ray.shutdown()
        print(f"Ray Train, 1 worker:            {ray_step:8.1f} clips/s", flush=True)
        after = plain_keras(spectrograms, run_cfg, args.epochs)
        print(f"plain Keras model.fit (after):  {after:8.1f} clips/s", flush=True)
    plain = (before + after) / 2
    ratio = ray_step / plain
    print(f"plain Keras model.fit (mean):   {plain:8.1f} clips/s")
    print(f"Ray Train, 1 worker (train):    {ray_step:8.1f} clips/s   ratio {ratio:.3f} ({'meets' if ratio >= 0.9 else 'MISSES'} the 0.90 bar)")
    print(f"Ray Train, 1 worker (epoch incl. validation + latent statistics): {ray_epoch:8.1f} clips/s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(json.dumps({"model": args.model, "batch_size": run_cfg.train.batch_size, "plain_clips_per_s": plain, "plain_before": before, "plain_after": after,
                      "ray_clips_per_s": ray_step, "ray_epoch_clips_per_s": ray_epoch, "ratio": ratio, "flops": flops}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
