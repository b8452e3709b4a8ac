"""vae.tf_backend gives every Ray Train worker the same TF_CONFIG as Ray's own TensorflowConfig,
without TF_USE_LEGACY_KERAS, on a real local Ray instance."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def _seen_by_workers(backend_config, workers: int = 2) -> list[dict]:
    """What each worker of a run with ``backend_config`` saw, in world-rank order."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    # Defined here, so that it travels to the workers by value: they cannot import a test module.
    def _worker_env(config: dict) -> None:
        import os

        import ray.train

        rank = ray.train.get_context().get_world_rank()
        seen = {
            "tf_config": os.environ["TF_CONFIG"],
            "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS"),
            "rank": rank,
        }
        with open(os.path.join(config["out"], f"{rank}.json"), "w") as f:
            json.dump(seen, f)

    with tempfile.TemporaryDirectory() as storage, tempfile.TemporaryDirectory() as out:
        DataParallelTrainer(
            _worker_env,
            train_loop_config={"out": out},
            backend_config=backend_config,
            scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="tf-config", storage_path=storage),
        ).fit()
        seen = [json.loads((Path(out) / f"{rank}.json").read_text()) for rank in range(workers)]
    return seen


def _shape(seen: list[dict]) -> list[dict]:
    """Each worker's TF_CONFIG with the ports left out (they are free ports found at start-up)."""
    out = []
    for m in seen:
        cfg = json.loads(m["tf_config"])
        hosts = [address.rsplit(":", 1)[0] for address in cfg["cluster"]["worker"]]
        out.append({"hosts": hosts, "task": cfg["task"], "rank": m["rank"]})
    return out


def test_workers_see_the_same_tf_config_as_with_rays_tensorflow_backend(ray_local):
    from ray.train.tensorflow import TensorflowConfig

    from vae.tf_backend import TFConfig

    ours, rays = _seen_by_workers(TFConfig()), _seen_by_workers(TensorflowConfig())
    assert len(ours) == len(rays) == 2
    assert _shape(ours) == _shape(rays)
    for m in ours:
        cfg = json.loads(m["tf_config"])
        assert cfg["task"] == {"type": "worker", "index": m["rank"]}
        ports = [int(a.rsplit(":", 1)[1]) for a in cfg["cluster"]["worker"]]
        assert len(set(ports)) == len(ports) and all(0 < p < 65536 for p in ports)
    assert len({json.dumps(json.loads(m["tf_config"])["cluster"]) for m in ours}) == 1, "one cluster for all"
    # Keras 3 models: Ray's backend asks for Keras 2, this project's must not.
    assert [m["legacy_keras"] for m in rays] == ["1", "1"]
    assert [m["legacy_keras"] for m in ours] == [None, None]
