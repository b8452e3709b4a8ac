"""Serve a trained checkpoint over HTTP with Ray Serve: a listening page and a generation API.

    python -m jobs.serve --checkpoint CKPT [--host 127.0.0.1] [--port 8000] [--replicas N]
        [--max-batch-size B] [--max-clips N] [--wait]

CKPT is a checkpoint folder, local or s3://, or a sweep's EXP/best (pinned to its
current published version). Open http://HOST:PORT/ in a browser; the API is described
in vae/serving/app.py and the README. Locally this starts Ray, serves until Ctrl-C (or
SIGTERM), then stops Serve and Ray. With RAY_ADDRESS set (e.g. under `ray job submit`)
it deploys the application to that cluster and returns, leaving it running there
(`serve shutdown` removes it); --wait serves until interrupted instead. The last stdout
line is JSON with the URL.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from jobs._cli import add_config_arguments, add_num_cpus, fail, job_config, parser, run, show_config_defaults
from vae.config import ConfigError, ServeConfig

APP_NAME = "fsdd-vae"


# Shorthand flag -> the ServeConfig key it sets (any key: --set serve.KEY=VALUE).
SHORTHANDS = {
    "replicas": "serve.num_replicas",
    "max_batch_size": "serve.max_batch_size",
    "max_clips": "serve.max_clips",
}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.serve", __doc__)
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint folder (local or s3://), or a sweep's EXP/best",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port of the HTTP proxy")
    p.add_argument("--replicas", type=int, help="model replicas (each one CPU)")
    p.add_argument("--max-batch-size", type=int, help="requests per batch; 1 = one at a time")
    p.add_argument("--max-clips", type=int, help="most clips one /api/generate request may ask for")
    add_num_cpus(p)
    p.add_argument("--wait", action="store_true", help="on a cluster, serve until interrupted instead of returning")
    add_config_arguments(p, "serve.max_upload_seconds=5")
    show_config_defaults(p, SHORTHANDS, {"serve": ServeConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _stop_on_signals() -> tuple[threading.Event, list[str]]:
    """SIGINT (Ctrl-C) and SIGTERM (`ray job stop`, Kubernetes) set the event, naming the signal."""
    stop, received = threading.Event(), []

    def handler(signum, frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop, received


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("serve", lambda: _main(args), args.verbose)


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    """The service's config from the options, checked; a warning when it would be open beyond loopback."""
    from dataclasses import replace

    config = job_config(args, ServeConfig, "serve", SHORTHANDS)
    # A replica must hold at least two batches' requests, or the next batch cannot fill while one runs.
    config = replace(
        config, max_ongoing_requests=max(config.max_ongoing_requests, 2 * config.max_batch_size)
    ).validate()
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.auth_token_env:
        print(
            f"warning: serving on {args.host} without auth: anyone who reaches it may use the API "
            "(--set serve.auth_token_env=VAR, serve.rate_limit_per_minute=N)",
            flush=True,
        )
    return config


def _main(args: argparse.Namespace) -> int:
    from vae.checkpoint import check
    from vae.raysetup import finish_ray, init_ray

    config = _serve_config(args)
    # The checkpoint is checked before Ray starts, so a wrong path fails in seconds.
    resolved, run_cfg = check(args.checkpoint)
    print(f"checkpoint {resolved}: {run_cfg.prior.kind} prior, features {run_cfg.features.shape}", flush=True)

    from ray import serve

    from vae.serving import application, start

    try:
        started_ray = init_ray(args.num_cpus)
    except Exception as exc:  # Ray raises plain Exception when its processes do not come up
        return fail("serve", f"could not start or reach Ray: {exc}")
    url = f"http://{args.host}:{args.port}/"
    summary = {
        "url": url,
        "checkpoint": resolved,
        "app": APP_NAME,
        "replicas": config.num_replicas,
        "max_batch_size": config.max_batch_size,
    }
    try:
        start(args.host, args.port, config)
        serve.run(application(resolved, config), name=APP_NAME, route_prefix="/")
    except Exception as exc:  # a replica that cannot start (e.g. a port in use, a checkpoint unreadable there)
        finish_ray()
        return fail("serve", f"could not deploy {resolved}: {type(exc).__name__}: {exc}")
    print(
        f"serving {resolved} at {url} ({config.num_replicas} replica(s), batches of up to {config.max_batch_size})",
        flush=True,
    )
    if not (started_ray or args.wait):
        print(f"deployed as application {APP_NAME!r}; it keeps running on the cluster (`serve shutdown` stops it)")
        print(json.dumps({**summary, "running": True}))
        return 0

    stop, received = _stop_on_signals()
    print("Ctrl-C to stop", flush=True)
    print(json.dumps({**summary, "running": True}), flush=True)
    while not stop.wait(1.0):
        pass
    print(f"{received[0]}: stopping", flush=True)
    serve.delete(APP_NAME)
    if started_ray:
        serve.shutdown()
    finish_ray()
    print(json.dumps({**summary, "running": False}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
