"""Load on the generation service: batched (@serve.batch) vs one request at a time, same run.

    python -m benchmarks.serve_load [--checkpoint C] [--clients 16] [--seconds 8] [--rounds 2] [--num-cpus 2]
        [--max-batch-size 32] [--replicas 1]

Starts a local Ray instance and Serve on 127.0.0.1 (a free port) and deploys the service
twice side by side: ``/batched`` with ``ServeConfig.max_batch_size`` (or --max-batch-size)
and ``/one_at_a_time`` with 1. In each of --rounds rounds, each application in turn is
driven by ``--clients`` concurrent clients (threads, one keep-alive connection each,
loopback only) for ``--seconds`` per endpoint: ``GET /api/generate?digit=D&seed=S`` and
``POST /api/reconstruct`` with real FSDD clips; then one client alone on ``/api/generate``:
the latency of a single request. Each phase stops by itself at its deadline (a client
finishes the request in flight). Prints requests/s, p50/p95/p99 latency, errors and the
mean batch the service formed (from ``/api/model``) over all rounds, the batched /
one-at-a-time throughput ratio and the load average; the last stdout line is JSON. Exit
status 1 if any request failed.

Without --checkpoint, an untrained ``default``-model checkpoint is built (latent statistics
of real clips): serving cost does not depend on training. What batching can save is what
one ``generation.to_waveforms`` call over a batch (the batched Griffin-Lim of
``vae/vocoder.py``) saves over the same clips one by one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 100_000


def untrained_checkpoint(directory: str, fsdd_dir: Path, model: str) -> str:
    """An untrained VAE of the ``model`` preset whose latent statistics are those of 100 real clips."""
    from vae import checkpoint, generation
    from vae.config import FeatureConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
    from vae.dataset import extract_clip
    from vae.latent_stats import latent_stats
    from vae.models import build_vae

    features = preset(FeatureConfig, "default")
    paths = [fsdd_dir / f"{d}_{s}_{t}.wav" for d in range(10) for s in ("george", "lucas") for t in range(5, 10)]
    rows = [extract_clip(str(p), p.read_bytes(), features) for p in paths]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("spectrogram", "digit", "db_min", "db_max")}
    run_cfg = RunConfig(features, preset(ModelConfig, model), PriorConfig(), TrainConfig()).validate()
    vae = build_vae(features.shape, run_cfg.model, run_cfg.prior, run_cfg.loss)
    mu = generation.encode(checkpoint.LoadedModel("mem", run_cfg, vae), batch["spectrogram"], batch["digit"])
    expost = generation.fit_expost(mu, batch["digit"], run_cfg.sampling)  # samples come from these, as a trained run's
    return checkpoint.save(directory, vae, None, 0, run_cfg, {"epoch": 0}, latent_stats(vae, "normal", [batch]), expost)


class Client(threading.Thread):
    """One client: requests back to back on one connection until the deadline."""

    def __init__(self, port: int, requests, deadline: float):
        super().__init__(daemon=True)
        self.port, self.requests, self.deadline = port, requests, deadline
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        for method, path, body in self.requests:
            if time.monotonic() >= self.deadline:
                break
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "audio/wav"} if body else {})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    self.errors.append(f"{method} {path}: {response.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                continue
            self.latencies.append(time.perf_counter() - start)
        conn.close()


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def drive(port: int, prefix: str, make_requests, clients: int, seconds: float, kind: str) -> dict:
    """``clients`` concurrent clients for ``seconds`` on the application at ``prefix``: the raw run."""
    before = get_json(port, prefix + "/api/model")["batching"][kind]
    deadline = time.monotonic() + seconds
    threads = [
        Client(port, ((m, prefix + path, b) for m, path, b in make_requests(i)), deadline) for i in range(clients)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = get_json(port, prefix + "/api/model")["batching"][kind]
    return {
        "latencies": [x for t in threads for x in t.latencies],
        "errors": [e for t in threads for e in t.errors],
        "seconds": elapsed,
        "batches": after["batches"] - before["batches"],
        "batched_requests": after["requests"] - before["requests"],
        "load": os.getloadavg()[0],
    }


def summary(runs: list[dict], clients: int) -> dict:
    """Throughput over all rounds, latency percentiles over every request, errors, mean batch."""
    latencies = np.array([x for r in runs for x in r["latencies"]])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies.size else [float("nan")] * 3
    batches = sum(r["batches"] for r in runs)
    errors = [e for r in runs for e in r["errors"]]
    return {
        "clients": clients,
        "requests": int(latencies.size),
        "requests_per_s": latencies.size / sum(r["seconds"] for r in runs),
        "requests_per_s_by_round": [round(len(r["latencies"]) / r["seconds"], 2) for r in runs],
        "p50_s": float(p50),
        "p95_s": float(p95),
        "p99_s": float(p99),
        "errors": len(errors),
        "first_errors": errors[:3],
        "mean_batch": sum(r["batched_requests"] for r in runs) / batches if batches else 0.0,
        "load_by_round": [round(r["load"], 1) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="checkpoint to serve (default: an untrained --model checkpoint)")
    p.add_argument("--model", default="default", help="ModelConfig preset of the untrained checkpoint")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument(
        "--seconds", type=float, default=8.0, help="per endpoint, mode and round (default run: about 2 minutes)"
    )
    p.add_argument("--rounds", type=int, default=2, help="the modes take turns this many times (shared machines drift)")
    p.add_argument(
        "--num-cpus", type=int, default=2, help="logical CPUs of the local Ray instance (at least 2 x --replicas)"
    )
    p.add_argument("--max-batch-size", type=int, default=None, help="the batched mode's batch (default: ServeConfig's)")
    p.add_argument("--replicas", type=int, default=1, help="replicas of each mode's application")
    p.add_argument(
        "--fsdd-dir", default=os.environ.get("FSDD_DIR") or str(REPO.parent / "shared" / "fsdd" / "recordings")
    )
    args = p.parse_args(argv)

    import ray
    from ray import serve

    from vae.config import ServeConfig
    from vae.raysetup import init_ray
    from vae.serving import application
    from vae.serving import start as start_serve

    fsdd = Path(args.fsdd_dir)
    tmp = tempfile.TemporaryDirectory(prefix="serve-load-")
    checkpoint = args.checkpoint or untrained_checkpoint(os.path.join(tmp.name, "checkpoint"), fsdd, args.model)
    uploads = [
        (d, (fsdd / f"{d}_{s}_{t}.wav").read_bytes())
        for d in range(10)
        for s in ("jackson", "theo", "yweweler")
        for t in range(3)
    ]
    batched = replace(ServeConfig(), num_replicas=args.replicas)
    if args.max_batch_size:
        batched = replace(
            batched,
            max_batch_size=args.max_batch_size,
            max_ongoing_requests=max(batched.max_ongoing_requests, 2 * args.max_batch_size),
        )
    modes = {"batched": batched.validate(), "one_at_a_time": replace(batched, max_batch_size=1).validate()}

    digits = list(range(10))  # the checkpoint's own, once it is deployed

    # Request streams of client i; a client also stops at MAX_REQUESTS, whatever the deadline.
    # Uploads say their digit: a conditional model needs it (others ignore it).
    def generate(i: int):
        return (
            ("GET", f"/api/generate?digit={digits[(i + k) % len(digits)]}&seed={1000 * i + k}", None)
            for k in range(MAX_REQUESTS)
        )

    def reconstruct(i: int):
        return (
            ("POST", f"/api/reconstruct?digit={d}", body)
            for d, body in (uploads[(7 * i + k) % len(uploads)] for k in range(MAX_REQUESTS))
        )

    phases = (
        ("generate", generate, "generate", args.clients),
        ("reconstruct", reconstruct, "reconstruct", args.clients),
        ("generate_single_client", generate, "generate", 1),
    )
    runs: dict[str, dict[str, list]] = {mode: {name: [] for name, *_ in phases} for mode in modes}
    t0 = time.perf_counter()
    init_ray(max(args.num_cpus, 2 * args.replicas), include_dashboard=False)  # Serve's Python API needs no dashboard
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        start_serve("127.0.0.1", port, batched)
        # Both applications stay deployed, each at its own prefix; the idle one costs no CPU.
        for mode, cfg in modes.items():
            serve.run(application(checkpoint, cfg), name=mode, route_prefix=f"/{mode}",
                      logging_config={"enable_access_log": False, "log_level": "WARNING"})  # fmt: skip
            digits[:] = get_json(port, f"/{mode}/api/model")["digits_available"] or digits
            drive(port, f"/{mode}", generate, 2, 2.0, "generate")  # warm-up: connections, first calls
            drive(port, f"/{mode}", reconstruct, 2, 2.0, "reconstruct")
        print(f"Ray, Serve and both applications up on 127.0.0.1:{port} in {time.perf_counter() - t0:.1f} s; "
              f"checkpoint {checkpoint}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
        for round_ in range(args.rounds):
            for mode in modes:
                for name, make, kind, clients in phases:
                    r = drive(port, f"/{mode}", make, clients, args.seconds, kind)
                    runs[mode][name].append(r)
                    print(f"  round {round_} {mode:14s} {name:23s} {clients:2d} clients {len(r['latencies']) / r['seconds']:7.2f} req/s  "
                          f"errors {len(r['errors'])}  batches {r['batches']}  load {r['load']:.1f}", flush=True)  # fmt: skip
                    for e in r["errors"][:3]:
                        print(f"    error: {e}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        tmp.cleanup()

    results = {
        mode: {name: summary(rs, phase[3]) for (name, rs), phase in zip(by.items(), phases)}
        for mode, by in runs.items()
    }
    print()
    for mode, by in results.items():
        print(
            f"{mode}: max_batch_size {modes[mode].max_batch_size}, {modes[mode].num_replicas} replica(s), {args.rounds} x {args.seconds:g} s per row"
        )
        for name, r in by.items():
            print(f"  {name:23s} {r['clients']:2d} clients {r['requests']:5d} req {r['requests_per_s']:7.2f} req/s  "
                  f"p50 {r['p50_s'] * 1e3:7.1f} ms  p95 {r['p95_s'] * 1e3:7.1f} ms  p99 {r['p99_s'] * 1e3:7.1f} ms  "
                  f"errors {r['errors']}  mean batch {r['mean_batch']:.1f}")  # fmt: skip
    ratios = {
        e: results["batched"][e]["requests_per_s"] / results["one_at_a_time"][e]["requests_per_s"]
        for e in ("generate", "reconstruct")
    }
    errors = sum(r["errors"] for by in results.values() for r in by.values())
    print(f"\nbatched / one-at-a-time throughput at {args.clients} clients: generate {ratios['generate']:.2f}x, "
          f"reconstruct {ratios['reconstruct']:.2f}x (target >= 3x); single-client generate p99 "
          f"{results['batched']['generate_single_client']['p99_s'] * 1e3:.0f} ms (target < 1000 ms); errors {errors}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(json.dumps({"clients": args.clients, "seconds": args.seconds, "rounds": args.rounds, "num_cpus": args.num_cpus,
                      "ratios": ratios, "errors": errors, "load_average_1min": round(os.getloadavg()[0], 1), "results": results}))  # fmt: skip
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
