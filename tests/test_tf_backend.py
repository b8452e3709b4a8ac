"""vae.tf_backend gives every Ray Train worker the same TF_CONFIG as Ray's own TensorflowConfig,
without TF_USE_LEGACY_KERAS, on a real local Ray instance, with ports outside the kernel's ephemeral range."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest

from vae import tf_backend


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
        assert len(set(ports)) == len(ports)
        if tf_backend._port_range() is not None:
            lo, hi = tf_backend._port_range()
            assert all(lo <= p <= hi for p in ports), ports
    assert len({json.dumps(json.loads(m["tf_config"])["cluster"]) for m in ours}) == 1, "one cluster for all"
    # Keras 3 models: Ray's backend asks for Keras 2, this project's must not.
    assert [m["legacy_keras"] for m in rays] == ["1", "1"]
    assert [m["legacy_keras"] for m in ours] == [None, None]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(
    ("ephemeral", "inside"),
    [("32768\t60999\n", (20_000, 32_767)), ("25000 60999", (20_000, 24_999)), ("1024 65535", None), (None, None)],
)
def test_collective_ports_avoid_the_ephemeral_range(tmp_path, monkeypatch, ephemeral, inside):
    path = tmp_path / "ip_local_port_range"
    if ephemeral is not None:
        path.write_text(ephemeral)
    monkeypatch.setattr(tf_backend, "_EPHEMERAL_RANGE", str(path))
    assert tf_backend._port_range() == inside
    ports = [tf_backend.free_port() for _ in range(20)]
    assert all(0 < p < 65536 and _bindable(p) for p in ports)
    if inside is not None:
        assert all(inside[0] <= p <= inside[1] for p in ports), ports


def test_a_taken_port_is_not_handed_out(tmp_path, monkeypatch):
    """With the range narrowed to one port that another socket holds, the kernel's pick is the fallback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(tf_backend, "COLLECTIVE_PORTS", (taken, taken))
        path = tmp_path / "ip_local_port_range"
        path.write_text(f"{taken + 1} 65535")
        monkeypatch.setattr(tf_backend, "_EPHEMERAL_RANGE", str(path))
        assert tf_backend._port_range() == (taken, taken)
        assert tf_backend.free_port(tries=4) != taken
