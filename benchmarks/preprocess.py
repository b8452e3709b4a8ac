"""Sequential loop vs the Ray Data extraction job: same features, same Parquet, >= 10,000 clips.

    python -m benchmarks.preprocess [--clips 10000] [--num-cpus 2] [--features default]

The shared FSDD recordings are repeated under new names (symlinks in a temp dir,
speaker renamed ``george`` -> ``georgea``, ``georgeb``, ...) until there are
``--clips`` files. Both sides run the same per-clip function
(:func:`vae.dataset.extract_rows`: read, decode, spectrogram) and write Parquet
with the same schema; the loop in this process, the job through Ray Data on a
local Ray instance with ``--num-cpus`` CPUs.

Timed region: listing, reading, features and writing. Excluded and reported
separately: starting Ray, and one small warm-up run of each side (the first
librosa call of a process imports scipy/numba, ~2 s; Ray's first run also starts
its worker processes). The cores may be shared with other work, so the two sides
run in alternating rounds at the same CPU priority and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

from vae import dataset, storage
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.raysetup import init_ray


def make_inputs(src: str, dest: str, n_clips: int) -> list[str]:
    """``n_clips`` symlinks to the files of ``src`` under new, still valid, names."""
    files = sorted(f for f in os.listdir(src) if f.endswith(".wav"))
    out = []
    for k in range(-(-n_clips // len(files))):
        for name in files:
            if len(out) == n_clips:
                return out
            digit, speaker, take = name[:-4].split("_")
            link = os.path.join(dest, f"{digit}_{speaker}{chr(ord('a') + k)}_{take}.wav")
            os.symlink(os.path.join(src, name), link)
            out.append(link)
    return out


def _spin(seconds: float, out) -> None:
    t, c = time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds:
        pass
    out.put(time.process_time() - c)


def cores_available(processes: int, seconds: float = 2.0) -> float:
    """CPU cores that ``processes`` busy-looping processes actually get right now (shared machines)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_spin, args=(seconds, q)) for _ in range(processes)]
    for p in procs:
        p.start()
    cpu = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return cpu / seconds


def sequential(src: str | list[str], dst: str, cfg: FeatureConfig, num_cpus: int) -> int:
    """The plain loop: list, then every clip through the same function, written in the same
    Parquet files as the Ray job's blocks (one big table would cost the loop more per clip)."""
    files = dataset.list_inputs(src)
    items = dataset.input_items(files)
    fs = storage.resolve(files[0]).fs
    os.makedirs(dst, exist_ok=True)
    per_file = -(-len(items) // dataset.default_num_blocks(len(items), num_cpus))
    written = 0
    for start in range(0, len(items), per_file):
        rows, _ = dataset.extract_rows(items[start : start + per_file], fs, cfg)
        pq.write_table(dataset.clips_table(rows, cfg), os.path.join(dst, f"part-{start}.parquet"))
        written += len(rows)
    return written


def main(argv: list[str] | None = None) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=os.environ.get("FSDD_DIR") or os.path.join(repo, "..", "shared", "fsdd", "recordings"))
    p.add_argument("--clips", type=int, default=10_000)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--features", default="default", choices=sorted(FEATURE_PRESETS))
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of each side")
    args = p.parse_args(argv)
    cfg = preset(FeatureConfig, args.features)

    work = tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        inputs = os.path.join(work, "in")
        os.makedirs(inputs)
        files = make_inputs(os.path.abspath(args.src), inputs, args.clips)
        for f in files:  # both sides read from a warm page cache
            with open(f, "rb") as fh:
                fh.read()
        print(f"{len(files)} clips, features={args.features} {cfg.shape}, {args.num_cpus} CPUs")

        sequential(files[:8], os.path.join(work, "warm-seq"), cfg, args.num_cpus)
        # Ray starts its workers at niceness 15; the loop runs at 0. On cores shared
        # with other work that alone would decide the race, so both run at 0 here.
        os.environ.setdefault("RAY_worker_niceness", "0")
        t = time.perf_counter()
        init_ray(num_cpus=args.num_cpus, include_dashboard=False)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        # Two blocks per CPU, so that every worker process has started and imported librosa.
        warm = files[: 16 * args.num_cpus]
        dataset.extract(warm, os.path.join(work, "warm-ray"), cfg, num_blocks=2 * args.num_cpus, progress=None)
        cold_s = time.perf_counter() - t
        print(f"excluded: ray start-up {start_s:.2f} s; first run in the fresh instance "
              f"({len(warm)} clips, workers start and import librosa) {cold_s:.2f} s", flush=True)

        # The cores may be shared with other work: measure what two processes can get,
        # alternate the two sides and compare medians.
        cores = [cores_available(1), cores_available(2)]
        print(f"cores available now: {cores[0]:.2f} to one process, {cores[1]:.2f} to two", flush=True)
        seq_times, ray_times, seq_cpu, ray_cpu = [], [], [], []
        for r in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            n_seq = sequential(inputs, os.path.join(work, "seq"), cfg, args.num_cpus)
            seq_times.append(time.perf_counter() - t)
            seq_cpu.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            summary = dataset.extract(inputs, os.path.join(work, "ray"), cfg, progress=None)
            ray_times.append(time.perf_counter() - t)
            ray_cpu.append(summary.worker_cpu_s + time.process_time() - c)
            assert n_seq == summary.written == len(files) and summary.rejected == 0
            print(f"round {r + 1}: sequential {seq_times[-1]:.2f} s, ray data {ray_times[-1]:.2f} s, "
                  f"ratio {seq_times[-1] / ray_times[-1]:.2f}x, load average {os.getloadavg()[0]:.1f}", flush=True)
        seq_s, ray_s = float(np.median(seq_times)), float(np.median(ray_times))
        print(f"sequential loop: {len(files) / seq_s:.0f} clips/s (median {seq_s:.2f} s)")
        print(f"ray data job:    {len(files) / ray_s:.0f} clips/s (median {ray_s:.2f} s)")
        cores += [cores_available(1), cores_available(2)]
        print(f"cores available after: {cores[2]:.2f} to one process, {cores[3]:.2f} to two")
        print(f"ratio ray/sequential: {seq_s / ray_s:.2f}x")
        # CPU seconds do not depend on what else runs on the cores: they show the job's overhead.
        print(f"CPU per 1000 clips: sequential {1000 * np.median(seq_cpu) / len(files):.2f} s, "
              f"ray (workers + driver) {1000 * np.median(ray_cpu) / len(files):.2f} s")
        print(json.dumps(dict(
            clips=len(files), features=args.features, num_cpus=args.num_cpus, repeats=args.repeats,
            sequential_clips_per_s=round(len(files) / seq_s, 1), ray_clips_per_s=round(len(files) / ray_s, 1),
            ratio=round(seq_s / ray_s, 3), sequential_s=[round(x, 2) for x in seq_times],
            ray_s=[round(x, 2) for x in ray_times], sequential_cpu_s=[round(x, 2) for x in seq_cpu],
            ray_cpu_s=[round(x, 2) for x in ray_cpu], load_average_1min=round(os.getloadavg()[0], 1),
            cores_available_1_2_before_after=[round(c, 2) for c in cores], ray_startup_s=round(start_s, 2), ray_first_run_s=round(cold_s, 2),
        )))
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
