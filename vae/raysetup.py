"""Ray start-up shared by every job.

The same entry point runs as ``python -m jobs.x`` (starts a local Ray instance)
and under ``ray job submit -- python -m jobs.x`` (Ray sets ``RAY_ADDRESS`` to the
cluster, and we connect to it). A script pointed at a running cluster with
``RAY_ADDRESS=host:port`` behaves like a submitted job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from vae import console

API_SERVER_VAR = "RAY_API_SERVER_ADDRESS"
# Lets ray.init's runtime_env set variables that a submitted job's runtime_env sets too.
OVERRIDE_JOB_ENV_VAR = "RAY_OVERRIDE_JOB_RUNTIME_ENV"


def init_ray(
    num_cpus: int | None = None, warm: Sequence[str] = (), warm_tasks: int | None = None, **local_kwargs: Any
) -> bool:
    """Connect to ``RAY_ADDRESS`` if set, else start a local Ray instance.

    ``num_cpus``, ``warm`` and ``local_kwargs`` (e.g. ``object_store_memory``,
    ``include_dashboard``) only apply when a local instance is started: a running
    cluster's resources and workers are its own. ``warm``: modules that the
    instance's first workers import at once, in ``warm_tasks`` of them at most
    (see :func:`warm_workers`). Idempotent: if Ray is already initialised in this
    process nothing happens. Returns True if this call started a local instance.
    """
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(logging_level=getattr(logging, console.library_log_level()), log_to_driver=True)
    if address is None:
        # "local": a fresh instance; plain ray.init() would join any cluster that
        # `ray start` left running on this machine.
        address = "local"
        kwargs.update(num_cpus=num_cpus, **local_kwargs)
    api_server = (
        _pin_api_server(kwargs) if address == "local" and kwargs.get("include_dashboard") is not False else None
    )
    # Only Ray's own processes, which take their environment from the raylet started here, get
    # the variable: a subprocess of this driver (e.g. `ray job submit --address OTHER`) must not.
    saved = {name: os.environ.get(name) for name in (API_SERVER_VAR, OVERRIDE_JOB_ENV_VAR)}
    if api_server:
        os.environ[API_SERVER_VAR] = api_server
    if address != "local":
        _cluster_env(kwargs)
    try:
        ray.init(address=address, **kwargs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if address == "local" and warm:
        warm_workers(warm, warm_tasks)
    _quiet_ray_data()
    return address == "local"


def _cluster_env(kwargs: dict[str, Any]) -> None:
    """A cluster's workers do not inherit this process's environment: the console settings go in the
    job's ``runtime_env``, overriding the same variables of a submitted job's (whose values this
    process already has, unless a flag such as ``--verbose`` changed them)."""
    env = console.worker_env()
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
        os.environ[OVERRIDE_JOB_ENV_VAR] = "1"


def cluster_cpus() -> int:
    """The CPUs of the cluster this process is connected to (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def warm_workers(modules: Sequence[str], tasks: int | None = None) -> list[Any]:
    """One task per CPU, or ``tasks`` if fewer, that imports ``modules``; returns their refs,
    which nobody needs to wait for. A job passes as ``tasks`` the most tasks it will run at once:
    each warmed worker holds a process with the modules loaded.

    Sent as the instance starts, they run on the workers Ray starts as the driver
    connects and import while the driver is still importing and planning; the job's
    tasks then reuse those workers. Without them Ray Data's actors take those workers
    and its tasks start new ones, all importing on the same cores at once, which delays
    the first task.
    """
    import ray

    count = min(cluster_cpus(), tasks) if tasks else cluster_cpus()
    load = ray.remote(num_cpus=1, max_retries=0)(_import_modules)
    return [load.remote(tuple(modules)) for _ in range(max(1, count))]


def _import_modules(modules: tuple[str, ...]) -> list[str]:
    import importlib

    return [importlib.import_module(name).__name__ for name in modules]


def _pin_api_server(kwargs: dict[str, Any]) -> str:
    """Start the dashboard on a known port; return its URL, for ``RAY_API_SERVER_ADDRESS``.

    With that variable in the environment of every Ray process of this instance, the State
    API reaches this instance even when other Ray instances run on the machine.
    Ray Train's placement-group cleaner depends on it: without it, the resources of
    a Train run whose controller was killed (an early-stopped Tune trial) stay reserved.
    """
    import socket

    if not kwargs.get("dashboard_port"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            kwargs["dashboard_port"] = s.getsockname()[1]
    kwargs.setdefault("include_dashboard", True)
    kwargs.setdefault("dashboard_host", "127.0.0.1")
    return f"http://127.0.0.1:{kwargs['dashboard_port']}"


def _quiet_ray_data() -> None:
    """Ray Data's progress bars on a terminal only (in a log they are redrawn as hundreds of lines;
    the jobs print their own progress lines), and none of its per-run banners or notices without
    ``--verbose`` (also when Ray Data was imported before :func:`vae.console.configure`)."""
    import sys

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(console.library_log_level())


def finish_ray() -> None:
    """Disconnect from Ray, flushing forwarded worker logs, so that the job's final stdout line
    (its JSON summary) really is the last one. A local instance started by :func:`init_ray` stops."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
