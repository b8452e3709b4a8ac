"""Extraction as users time it: ``python -m jobs.preprocess`` against the original notebook's loop.

    python -m benchmarks.preprocess [--clips 15000] [--num-cpus 2] [--repeats 3]
    python -m benchmarks.preprocess --phase [--clips 10000] [--features default]

The shared FSDD recordings are repeated under new names (symlinks in a temp dir,
speaker renamed ``george`` -> ``georgea``, ``georgeb``, ...) until there are
``--clips`` files, read once so both sides start from a warm page cache.

Default mode, the whole process as a user times it: each round runs, as
subprocesses from a cold start, the notebook's sequential loop
(:mod:`benchmarks.notebook_loop`: librosa, ``seed`` features, ``np.save`` per clip)
and ``python -m jobs.preprocess --features seed`` (Ray start-up, Ray Data
extraction into Parquet, shutdown), alternating which goes first; medians are
compared. Also printed: each side's start-up (process start to its first clip,
read from timestamps of the job's output lines), and CPU per clip: the loop's,
against the job's extraction tasks' (summed over workers).

``--phase``: the extraction phase alone, in this process: starting Ray and a
warm-up run excluded, then the Ray Data job against a loop over the same
per-clip code (:func:`vae.dataset.extract_rows`) writing the same Parquet files.

Ray starts its workers at niceness 15, the loops run at 0: on cores shared with
other work that alone would decide the race, so both run at 0 here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from vae import dataset, storage
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.raysetup import init_ray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _env(repo: str = REPO) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)  # the job starts its own local instance, as on a laptop
    env.setdefault("RAY_worker_niceness", "0")
    return env


# --------------------------------------------------------------------------- whole process


def run_loop(inputs: str, dst: str) -> dict:
    """The notebook's loop as a fresh process; its own figures plus the wall time from spawn to exit."""
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.notebook_loop", inputs, dst],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(f"notebook loop failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]), wall_s=wall)


def run_job(inputs: str, dst: str, num_cpus: int, log: str, repo: str = REPO) -> dict:
    """``python -m jobs.preprocess --features seed`` of the checkout ``repo`` as a fresh process, with when its lines appeared."""
    shutil.rmtree(dst, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "jobs.preprocess",
        "--input",
        inputs,
        "--output",
        dst,
        "--features",
        "seed",
        "--num-cpus",
        str(num_cpus),
    ]
    lines = []
    with open(log, "w") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout:
            lines.append((time.perf_counter() - t, line.rstrip("\n")))
        proc.wait()
        wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(
            "jobs.preprocess failed:\n" + "\n".join(text for _, text in lines[-20:]) + open(log).read()[-3000:]
        )
    summary = json.loads(lines[-1][1])
    # "N .wav files under ...": imports done, inputs listed; "extract: N inputs in B blocks": Ray is up.
    listed = next(at for at, text in lines if " .wav files under " in text)
    ray_up = next(at for at, text in lines if text.startswith("extract: ") and " blocks -> " in text)
    # The last progress line, "extract: N/N inputs done": then the staging check, the summary file, the
    # pointer switch, Ray's shutdown and the process's end, whichever side of the final lines the job shuts Ray down.
    done = [at for at, text in lines if text.startswith("extract: ") and " inputs done, " in text][-1]
    return dict(
        wall_s=wall,
        imports_s=listed,
        ray_start_s=ray_up - listed,
        extraction_s=summary["seconds"],
        exit_s=wall - done,
        written=summary["written"],
        rejected=summary["rejected"],
        worker_cpu_s=summary["worker_cpu_s"],
    )


def same_features(loop_dst: str, job_dst: str, n: int = 50) -> float:
    """Mean |loop - job| over ``n`` clips' spectrograms (the notebook resamples only the first 0.74 s)."""
    rows = dataset.load_split_numpy(job_dst, None, columns=["id", "spectrogram"])
    diffs = [
        np.abs(np.load(os.path.join(loop_dst, f"{i}.wav.npy")) - s).mean()
        for i, s in zip(rows["id"][:n], rows["spectrogram"][:n])
    ]
    return float(np.mean(diffs))


def whole_process(args: argparse.Namespace, work: str, inputs: str, n_files: int) -> None:
    sides = ["loop", "job"] + (["before"] if args.before else [])
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.repeats):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for side in order:
            if side == "loop":
                runs[side].append(run_loop(inputs, os.path.join(work, "loop")))
            else:
                repo = REPO if side == "job" else os.path.abspath(args.before)
                runs[side].append(
                    run_job(inputs, os.path.join(work, side), args.num_cpus, os.path.join(work, f"{side}.log"), repo)
                )
                assert runs[side][-1]["written"] == n_files and runs[side][-1]["rejected"] == 0, runs[side][-1]
        assert runs["loop"][-1]["clips"] == n_files
        lo = runs["loop"][-1]
        print(
            f"round {r + 1} ({' then '.join(order)}), load average {os.getloadavg()[0]:.1f}: loop {lo['wall_s']:.2f} s "
            f"(CPU {1e3 * lo['loop_cpu_s'] / lo['clips']:.2f} ms per clip)",
            end="",
        )
        for side in sides[1:]:
            jb = runs[side][-1]
            print(
                f"; {side} {jb['wall_s']:.2f} s = {lo['wall_s'] / jb['wall_s']:.2f}x (imports {jb['imports_s']:.2f} s, Ray start "
                f"{jb['ray_start_s']:.2f} s, extraction {jb['extraction_s']:.2f} s, exit {jb['exit_s']:.2f} s; "
                f"CPU {1e3 * jb['worker_cpu_s'] / jb['written']:.2f} ms per clip)",
                end="",
            )
        print(flush=True)

    def med(side: str, key: str) -> float:
        return float(np.median([row[key] for row in runs[side]]))

    loop_s = med("loop", "wall_s")
    loop_cpu_ms = 1e3 * float(
        np.median([(x["loop_cpu_s"] - x["first_clip_cpu_s"]) / (x["clips"] - 1) for x in runs["loop"]])
    )
    print(f"medians of {args.repeats} rounds, {n_files} clips, seed features, {args.num_cpus} CPUs:")
    print(f"  {'':26} {'whole process':>13} {'vs loop':>8} {'start-up':>9} {'CPU per clip':>13}")
    print(
        f"  {'notebook loop':26} {loop_s:11.2f} s {'1.00x':>8} {med('loop', 'startup_s'):7.2f} s {loop_cpu_ms:10.2f} ms"
    )
    result = dict(
        mode="whole_process",
        clips=n_files,
        features="seed",
        num_cpus=args.num_cpus,
        repeats=args.repeats,
        loop_s=[round(x["wall_s"], 2) for x in runs["loop"]],
        loop_startup_s=round(med("loop", "startup_s"), 2),
        loop_cpu_ms_per_clip=round(loop_cpu_ms, 3),
        loop_first_clip_cpu_s=round(med("loop", "first_clip_cpu_s"), 2),
    )
    for side in sides[1:]:
        job_s = med(side, "wall_s")
        startup = med(side, "imports_s") + med(side, "ray_start_s")
        cpu_ms = 1e3 * float(np.median([x["worker_cpu_s"] / x["written"] for x in runs[side]]))
        label = "jobs.preprocess" + (" (--before)" if side == "before" else "")
        # Each round's own ratio too: on a machine whose speed drifts, a round's sides ran under the same conditions.
        paired = float(np.median([lo["wall_s"] / x["wall_s"] for lo, x in zip(runs["loop"], runs[side])]))
        print(
            f"  {label:26} {job_s:11.2f} s {loop_s / job_s:7.2f}x {startup:7.2f} s {cpu_ms:10.2f} ms   (median of rounds' ratios {paired:.2f}x)"
        )
        result[side] = dict(
            wall_s=[round(x["wall_s"], 2) for x in runs[side]],
            ratio=round(loop_s / job_s, 3),
            round_ratio_median=round(paired, 3),
            startup_s=round(startup, 2),
            imports_s=round(med(side, "imports_s"), 2),
            ray_start_s=round(med(side, "ray_start_s"), 2),
            extraction_s=round(med(side, "extraction_s"), 2),
            exit_s=round(med(side, "exit_s"), 2),
            worker_cpu_ms_per_clip=round(cpu_ms, 3),
        )
    print(
        "  start-up: the loop's is its imports (librosa); the job's is its imports and Ray's start, until extraction begins"
    )
    print(
        f"  CPU per clip: the loop's, less its first clip (librosa's lazy imports, {1e3 * med('loop', 'first_clip_cpu_s'):.0f} ms); "
        f"the job's extraction tasks', summed over workers"
    )
    for side in sides[1:]:
        r = result[side]
        print(
            f"  {side}: imports {r['imports_s']:.2f} s, Ray start {r['ray_start_s']:.2f} s, extraction {r['extraction_s']:.2f} s, "
            f"exit (publishing, Ray's shutdown, process end) {r['exit_s']:.2f} s"
        )
    diff = same_features(os.path.join(work, "loop"), os.path.join(work, "job"))
    print(f"same features: mean |loop - job| {diff:.2g} over 50 clips (the notebook resamples only the first 0.74 s)")
    print(json.dumps(dict(result, mean_abs_diff=float(f"{diff:.3g}"), load_average_1min=round(os.getloadavg()[0], 1))))


# --------------------------------------------------------------------------- extraction phase only


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
        dataset.write_parquet(dataset.clips_table(rows, cfg), os.path.join(dst, f"part-{start}.parquet"))
        written += len(rows)
    return written


def extraction_phase(args: argparse.Namespace, work: str, inputs: str, files: list[str]) -> None:
    cfg = preset(FeatureConfig, args.features)
    sequential(files[:8], os.path.join(work, "warm-seq"), cfg, args.num_cpus)
    os.environ.setdefault("RAY_worker_niceness", "0")
    t = time.perf_counter()
    init_ray(num_cpus=args.num_cpus, include_dashboard=False)
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    # Two blocks per CPU, so that every worker process has started and imported the features code.
    warm = files[: 16 * args.num_cpus]
    dataset.extract(warm, os.path.join(work, "warm-ray"), cfg, num_blocks=2 * args.num_cpus, progress=None)
    cold_s = time.perf_counter() - t
    print(
        f"excluded: ray start-up {start_s:.2f} s; first run in the fresh instance "
        f"({len(warm)} clips, workers start) {cold_s:.2f} s",
        flush=True,
    )

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
        print(
            f"round {r + 1}: sequential {seq_times[-1]:.2f} s, ray data {ray_times[-1]:.2f} s, "
            f"ratio {seq_times[-1] / ray_times[-1]:.2f}x, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    seq_s, ray_s = float(np.median(seq_times)), float(np.median(ray_times))
    print(f"sequential loop: {len(files) / seq_s:.0f} clips/s (median {seq_s:.2f} s)")
    print(f"ray data job:    {len(files) / ray_s:.0f} clips/s (median {ray_s:.2f} s)")
    cores += [cores_available(1), cores_available(2)]
    print(f"cores available after: {cores[2]:.2f} to one process, {cores[3]:.2f} to two")
    print(f"ratio ray/sequential: {seq_s / ray_s:.2f}x")
    # CPU seconds do not depend on what else runs on the cores: they show the job's overhead.
    print(
        f"CPU per 1000 clips: sequential {1000 * np.median(seq_cpu) / len(files):.2f} s, "
        f"ray (workers + driver) {1000 * np.median(ray_cpu) / len(files):.2f} s"
    )
    print(
        json.dumps(
            dict(
                mode="extraction_phase",
                clips=len(files),
                features=args.features,
                num_cpus=args.num_cpus,
                repeats=args.repeats,
                sequential_clips_per_s=round(len(files) / seq_s, 1),
                ray_clips_per_s=round(len(files) / ray_s, 1),
                ratio=round(seq_s / ray_s, 3),
                sequential_s=[round(x, 2) for x in seq_times],
                ray_s=[round(x, 2) for x in ray_times],
                sequential_cpu_s=[round(x, 2) for x in seq_cpu],
                ray_cpu_s=[round(x, 2) for x in ray_cpu],
                load_average_1min=round(os.getloadavg()[0], 1),
                cores_available_1_2_before_after=[round(c, 2) for c in cores],
                ray_startup_s=round(start_s, 2),
                ray_first_run_s=round(cold_s, 2),
            )
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--src", default=os.environ.get("FSDD_DIR") or os.path.join(REPO, "..", "shared", "fsdd", "recordings")
    )
    p.add_argument("--clips", type=int, default=None, help="default 15,000 (10,000 with --phase)")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of each side")
    p.add_argument(
        "--phase", action="store_true", help="the extraction phase alone, in this process (Ray started and warm)"
    )
    p.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also time jobs.preprocess of another checkout (e.g. a git worktree of main)",
    )
    p.add_argument(
        "--features",
        default="default",
        choices=sorted(FEATURE_PRESETS),
        help="with --phase only: the notebook computes seed",
    )
    args = p.parse_args(argv)
    clips = args.clips or (10_000 if args.phase else 15_000)

    work = tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        inputs = os.path.join(work, "in")
        os.makedirs(inputs)
        files = make_inputs(os.path.abspath(args.src), inputs, clips)
        for f in files:  # both sides read from a warm page cache
            with open(f, "rb") as fh:
                fh.read()
        print(f"{len(files)} clips, {args.num_cpus} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        if args.phase:
            extraction_phase(args, work, inputs, files)
        else:
            whole_process(args, work, inputs, len(files))
    finally:
        if "ray" in sys.modules:
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
