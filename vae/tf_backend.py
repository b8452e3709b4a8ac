"""Ray Train's TensorFlow set-up, without importing TensorFlow where it is not used.

Each worker learns the cluster from ``TF_CONFIG`` (every worker's address, and its own index), which
``MultiWorkerMirroredStrategy`` reads: the same ``TF_CONFIG`` as Ray's own ``TensorflowConfig``
(tests/test_training.py compares them). Ray's lives in ``ray.train.tensorflow``, whose ``__init__``
imports TensorFlow into every process that unpickles it (the Train controller of every run, the Tune
actor that builds each trial's trainer), and it sets ``TF_USE_LEGACY_KERAS=1`` on the workers, which
this project's Keras 3 models must not see. Only public Ray APIs are used here.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": worker_addresses}, "task": {"type": "worker", "index": index}}
    )


def _address() -> str:
    """``host:port`` of this worker for TensorFlow's collectives: its node's IP and a port free now."""
    host = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


class _Backend(Backend):
    def on_start(self, worker_group, backend_config: BackendConfig) -> None:
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
