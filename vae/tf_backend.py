"""Ray Train's TensorFlow set-up, without importing TensorFlow where it is not used.

Each worker learns the cluster from ``TF_CONFIG`` (every worker's address, and its own index), which
``MultiWorkerMirroredStrategy`` reads. Ray's own ``TensorflowConfig`` does the same, but it lives in
``ray.train.tensorflow``, whose ``__init__`` imports TensorFlow: every process that unpickles it (the
Train controller of every run, the Tune actor that builds each trial's trainer) would pay a ~7 s
import it never uses. It also sets ``TF_USE_LEGACY_KERAS=1`` on the workers, which this project's Keras 3
models do not want.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import ray
from ray._common.network_utils import build_address
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": worker_addresses}, "task": {"type": "worker", "index": index}}
    )


def _address() -> str:
    return build_address(*get_address_and_port())


class _Backend(Backend):
    def on_start(self, worker_group, backend_config: TFConfig) -> None:
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

    @property
    def framework(self):
        return TrainingFramework.TENSORFLOW
