"""Griffin-Lim: today's per-clip librosa path vs the batched TensorFlow vocoder (``vae.vocoder``).

    python -m benchmarks.griffin_lim [--takes 0 1 2 3 4] [--features default] [--batches 1 8 32 128] [--repeats 2]

The clips of ``benchmarks.features`` (every digit and speaker of the given test-split
takes), extracted with the chosen features, go through the spectrogram -> waveform
inverse three ways, timed on the same spectrograms with the same iterations and seeds:

- librosa per clip, one process: ``librosa.griffinlim`` once per clip (the baseline);
- librosa per clip in a pool of spawned processes, one per CPU (what ``resynthesise``
  did before the TensorFlow vocoder; pool start-up included, as every call paid it);
- ``vae.vocoder.spectrograms_to_waveforms`` at each batch size, with XLA and, at batch
  32, without. Tracing and compiling (once per process and batch shape) are excluded
  and printed.

Each path's rate is the median over ``--repeats`` rounds (the paths alternate within a
round, since the cores may be shared). Quality: the round-trip log-spectral distance
of each clip against its original recording (``benchmarks.features.round_trip_lsd``),
librosa's vs the vocoder's. The load average and the cores two busy processes get are
printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks.features import clip_files, clip_rows, round_trip_lsd
from benchmarks.preprocess import cores_available
from vae import features as F
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.vocoder import MOMENTUM, spectrograms_to_waveforms


def librosa_griffin_lim(spec: np.ndarray, cfg: FeatureConfig, db_min: float, db_max: float, seed: int) -> np.ndarray:
    """The per-clip path the vocoder replaced, kept here as the baseline."""
    import librosa

    mag = F.db_to_magnitude(F.spectrogram_to_db(spec, cfg, db_min, db_max), cfg)
    full = np.zeros((cfg.n_fft // 2 + 1, mag.shape[1]), dtype=np.float32)
    full[: mag.shape[0]] = mag
    y = librosa.griffinlim(
        full,
        n_iter=cfg.griffin_lim_iters,
        hop_length=cfg.hop_length,
        win_length=cfg.n_fft,
        n_fft=cfg.n_fft,
        window="hann",
        center=True,
        length=cfg.n_samples,
        momentum=MOMENTUM,
        init="random",
        random_state=seed,
    )
    return F.peak_normalise(y)


def _librosa_chunk(args) -> np.ndarray:
    specs, lo, hi, cfg, seed = args
    return np.stack([librosa_griffin_lim(s, cfg, a, b, seed + i) for i, (s, a, b) in enumerate(zip(specs, lo, hi))])


def librosa_pool(specs, lo, hi, cfg, workers: int) -> np.ndarray:
    """Chunks of clips over spawned processes, four chunks per process, as ``resynthesise`` did."""
    bounds = np.linspace(0, len(specs), min(len(specs), workers * 4) + 1).astype(int)
    jobs = [(specs[a:b], lo[a:b], hi[a:b], cfg, int(a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_librosa_chunk, jobs)))


def _timed(fn) -> tuple[np.ndarray, float, float]:
    """(result, wall s, CPU s of this process and of its finished children)."""

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    t, c = time.perf_counter(), cpu()
    out = fn()
    return out, time.perf_counter() - t, cpu() - c


def main(argv: list[str] | None = None) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--src", default=os.environ.get("FSDD_DIR") or os.path.join(repo, "..", "shared", "fsdd", "recordings")
    )
    p.add_argument("--takes", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="test-split takes (0-4) to use")
    p.add_argument("--features", default="default", choices=sorted(FEATURE_PRESETS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes of the librosa pool")
    args = p.parse_args(argv)

    cfg = preset(FeatureConfig, args.features)
    files = clip_files(args.src, args.takes)
    data, rows = clip_rows(files, cfg)
    n = len(rows)
    specs = np.stack([r["spectrogram"] for r in rows])
    lo, hi = np.array([r["db_min"] for r in rows]), np.array([r["db_max"] for r in rows])
    load_before = os.getloadavg()
    print(
        f"{n} clips (takes {args.takes}), features {args.features} {cfg.shape[0]} x {cfg.shape[1]}, "
        f"{cfg.griffin_lim_iters} iterations; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )

    paths = {
        "librosa per clip, 1 process": lambda: np.stack(
            [librosa_griffin_lim(s, cfg, a, b, i) for i, (s, a, b) in enumerate(zip(specs, lo, hi))]
        )
    }
    paths[f"librosa per clip, {args.workers} spawned processes"] = lambda: librosa_pool(
        specs, lo, hi, cfg, args.workers
    )
    variants = [(b, True) for b in args.batches] + ([(32, False)] if 32 in args.batches else [])
    compile_s = {}
    for b, xla in variants:
        name = f"TF batch {b}" + ("" if xla else ", XLA off")
        # Trace and compile for the call's batch shapes (a full batch and the remainder), untimed.
        t = time.perf_counter()
        for size in {min(b, n), n % b} - {0}:
            spectrograms_to_waveforms(specs[:size], cfg, lo[:size], hi[:size], n_iter=1, jit_compile=xla)
        compile_s[name] = time.perf_counter() - t
        paths[name] = lambda b=b, xla=xla: spectrograms_to_waveforms(specs, cfg, lo, hi, batch_size=b, jit_compile=xla)
    librosa_griffin_lim(specs[0], cfg, lo[0], hi[0], 0)  # numba compiles librosa's overlap-add on the first call

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    waves = {}
    for r in range(args.repeats):
        for name, fn in paths.items():
            waves[name], wall, cpu = _timed(fn)
            runs[name].append((wall, cpu))
            print(f"  round {r + 1}: {name}: {wall:.2f} s ({n / wall:.1f} clips/s)", flush=True)

    base = float(np.median([w for w, _ in runs["librosa per clip, 1 process"]]))
    lsd_librosa = [round_trip_lsd(d, y, cfg) for d, y in zip(data, waves["librosa per clip, 1 process"])]
    lsd_tf = [
        round_trip_lsd(d, y, cfg)
        for d, y in zip(data, waves["TF batch 32" if 32 in args.batches else f"TF batch {args.batches[0]}"])
    ]
    load_after = os.getloadavg()
    cores = cores_available(2)

    print(
        f"\n{n} clips, {args.features} features; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"two busy processes got {cores:.2f} cores"
    )
    print(f"{'path':38} {'clips/s':>8} {'ms/clip':>8} {'CPU ms/clip':>12} {'vs librosa':>11} {'compile s':>10}")
    results = []
    for name, timings in runs.items():
        wall = float(np.median([w for w, _ in timings]))
        cpu = float(np.median([c for _, c in timings]))
        results.append(
            dict(
                path=name,
                clips_per_s=round(n / wall, 1),
                ms_per_clip=round(1e3 * wall / n, 1),
                cpu_ms_per_clip=round(1e3 * cpu / n, 1),
                speedup=round(base / wall, 2),
                compile_s=round(compile_s[name], 2) if name in compile_s else None,
            )
        )
        r = results[-1]
        comp = f"{r['compile_s']:10.2f}" if r["compile_s"] is not None else f"{'':10}"
        print(
            f"{name:38} {r['clips_per_s']:8.1f} {r['ms_per_clip']:8.1f} {r['cpu_ms_per_clip']:12.1f} {r['speedup']:10.2f}x {comp}"
        )
    diff = float(np.mean(lsd_tf) - np.mean(lsd_librosa))
    ok = abs(diff) <= 0.2
    print(
        f"round-trip LSD: librosa {np.mean(lsd_librosa):.3f} dB, TF {np.mean(lsd_tf):.3f} dB, "
        f"difference {diff:+.3f} dB (limit 0.2): {'OK' if ok else 'FAIL'}"
    )
    print(
        json.dumps(
            dict(
                clips=n,
                features=args.features,
                iterations=cfg.griffin_lim_iters,
                results=results,
                lsd_db_librosa=round(float(np.mean(lsd_librosa)), 3),
                lsd_db_tf=round(float(np.mean(lsd_tf)), 3),
                lsd_within_limit=ok,
                load_before=[round(v, 2) for v in load_before],
                load_after=[round(v, 2) for v in load_after],
                cores_available=round(cores, 2),
            )
        )
    )


if __name__ == "__main__":
    main()
