"""Ray Train's TensorFlow set-up, without importing TensorFlow where it is not used.

Each worker learns the cluster from ``TF_CONFIG`` (every worker's address, and its own index), which
``MultiWorkerMirroredStrategy`` reads: the same ``TF_CONFIG`` as Ray's own ``TensorflowConfig``
(tests/test_training.py compares them). Ray's lives in ``ray.train.tensorflow``, whose ``__init__``
imports TensorFlow into every process that unpickles it (the Train controller of every run, the Tune
actor that builds each trial's trainer), and it sets ``TF_USE_LEGACY_KERAS=1`` on the workers, which
this project's Keras 3 models must not see. Only public Ray APIs are used here.

Each worker's port is found free at start-up, seconds before TensorFlow's gRPC server binds it. Ray's
own backend asks the kernel for any free port, so a port from the range the kernel hands out to every
other process (outgoing connections, other servers' ``bind(0)``) may be taken in between, and the run
fails with "Could not start gRPC server". Ports here come from below that range and above Ray's worker
ports, where only explicit binds land.
"""

from __future__ import annotations

import json
import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train.backend import Backend, BackendConfig


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": worker_addresses}, "task": {"type": "worker", "index": index}}
    )


COLLECTIVE_PORTS = (20_000, 32_767)  # above Ray's worker ports (10002-19999), below Linux's ephemeral ports
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def _port_range() -> tuple[int, int] | None:
    """The ports to draw from, or None where none is known to lie outside the kernel's ephemeral range."""
    try:
        ephemeral_lo = int(Path(_EPHEMERAL_RANGE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    lo, hi = COLLECTIVE_PORTS[0], min(COLLECTIVE_PORTS[1], ephemeral_lo - 1)
    return (lo, hi) if hi >= lo else None


def _binds(family: socket.AddressFamily, port: int) -> int:
    """``port`` if it can be bound now, else 0; with ``port=0``, the free port the kernel picks."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return 0
        return s.getsockname()[1]


def free_port(family: socket.AddressFamily = socket.AF_INET, tries: int = 64) -> int:
    """A port free now, outside the kernel's ephemeral range where there is one (else any free port)."""
    span = _port_range()
    if span is not None:
        draw = random.SystemRandom()
        for _ in range(tries):
            if port := _binds(family, draw.randint(*span)):
                return port
    return _binds(family, 0)


def _address() -> str:
    """``host:port`` of this worker for TensorFlow's collectives: its node's IP and a port free now."""
    host = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    port = free_port(family)
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


class _Backend(Backend):
    def on_start(self, worker_group, backend_config: BackendConfig) -> None:
        addresses = worker_group.execute(_address)
        for _ in range(8):  # workers on one node draw independently: two may draw the same port
            if len(set(addresses)) == len(addresses):
                break
            addresses = worker_group.execute(_address)
        ray.get(
            [
                worker_group.execute_single_async(i, _set_tf_config, worker_addresses=addresses, index=i)
                for i in range(len(worker_group))
            ]
        )


@dataclass
class TFConfig(BackendConfig):
    """``TF_CONFIG`` on every worker, for ``DataParallelTrainer(backend_config=TFConfig())``."""

    @property
    def backend_cls(self):
        return _Backend
