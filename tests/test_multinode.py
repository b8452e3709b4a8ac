"""Scale-out without code changes: on a two-node local cluster the library's own extraction
spreads its Ray Data tasks over both nodes, and ``TrainConfig(placement_strategy="SPREAD")``
puts the two Train workers on different nodes, which then train together.

The cluster (``ray.cluster_utils.Cluster``, 2 logical CPUs per node) lives in a subprocess
that runs this file as a script, so it never meets the session's ``ray_local`` instance in
the pytest process. The script prints one JSON object: what ran where.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_processes import end_processes_mentioning

from vae.tf_backend import free_port

CPUS_PER_NODE = 2
EXTRACT_BLOCKS = 8
DATA_OPERATORS = ("ReadItems", "Map(", "MapBatches(", "FlatMap(", "Filter(", "Write")
# 2 digits x 2 speakers x takes 0-9: 20 test clips (takes 0-4), 20 train clips (takes 5-9).
DIGITS, SPEAKERS, TAKES = (3, 7), ("jackson", "theo"), range(10)


def _clips(fsdd_dir: Path) -> list[str]:
    return [str(fsdd_dir / f"{d}_{s}_{t}.wav") for d in DIGITS for s in SPEAKERS for t in TAKES]


# --------------------------------------------------------------------------- the driver (subprocess)


def _is_data_task(task) -> bool:
    """A Ray Data operator task (named after its operator, e.g. ``MapBatches(fn)->Write``)."""
    return task.type == "NORMAL_TASK" and task.name.startswith(DATA_OPERATORS)


def _drive(fsdd_dir: Path, work: Path, temp_dir: str) -> dict:
    import ray
    from ray._private.services import resolve_ip_for_localhost
    from ray.cluster_utils import Cluster
    from ray.util.state import list_tasks

    from vae import storage, training, worker
    from vae.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig, preset
    from vae.dataset import extract

    # Ray's own processes find "their" cluster through RAY_ADDRESS or else the machine's latest one
    # (Train's placement-group cleaner does): pin it before any node starts, as other Ray instances
    # share this machine.
    gcs_port = free_port()
    os.environ["RAY_ADDRESS"] = f"{resolve_ip_for_localhost('127.0.0.1')}:{gcs_port}"
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            gcs_server_port=gcs_port,
            num_cpus=CPUS_PER_NODE,
            include_dashboard=True,  # the state API (list_tasks) goes through it
            dashboard_port=free_port(),
            dashboard_agent_listen_port=free_port(),
            temp_dir=temp_dir,
        ),
    )
    out: dict = {}
    try:
        cluster.add_node(num_cpus=CPUS_PER_NODE, dashboard_agent_listen_port=free_port())
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        out["nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

        # Ray Data: the extraction job's own function, one block per task.
        parquet = str(work / "features")
        summary = extract(_clips(fsdd_dir), parquet, preset(FeatureConfig, "default"), num_blocks=EXTRACT_BLOCKS)
        out["extract"] = {
            "written": summary.written,
            "rejected": summary.rejected,
            "train": summary.train,
            "test": summary.test,
        }
        state_api = "http://" + cluster.webui_url
        tasks: list = []
        for _ in range(30):  # task events reach the state API asynchronously
            tasks = [t for t in list_tasks(address=state_api, limit=10_000, detail=True) if _is_data_task(t)]
            if sum(t.state == "FINISHED" for t in tasks) >= EXTRACT_BLOCKS:
                break
            time.sleep(1)
        out["extract_tasks"] = [{"name": t.name, "node_id": t.node_id, "state": t.state} for t in tasks]

        # Ray Train: the library's trainer with SPREAD; each worker reports where it runs, then trains.
        def record_node_then_train(config):
            import ray.train

            rank = ray.train.get_context().get_world_rank()
            node = ray.get_runtime_context().get_node_id()
            storage.write_json(
                storage.join(config["run_dir"], "placement", f"rank{rank}.json"), {"rank": rank, "node_id": node}
            )
            worker.train_loop_per_worker(config)

        run_cfg = RunConfig(
            features=preset(FeatureConfig, "default"),
            model=preset(ModelConfig, "tiny"),
            train=TrainConfig(epochs=1, batch_size=5, num_workers=2, placement_strategy="SPREAD", max_failures=0),
        ).validate()
        datasets = training.load_datasets(parquet)
        runs = str(work / "runs")
        trainer = training.build_trainer(
            run_cfg, datasets, runs, "spread", datasets[worker.TRAIN].count(), train_loop=record_node_then_train
        )
        try:
            result = trainer.fit()
            out["train_error"] = None if result.error is None else repr(result.error)
            out["train_checkpoint"] = result.checkpoint.path if result.checkpoint else None
            out["train_metrics"] = dict(result.metrics or {})
        except Exception as exc:  # reported, not raised: placement is checked either way
            out["train_error"] = repr(exc)[:4000]
        placement_dir = storage.join(runs, "spread", "placement")
        out["train_workers"] = (
            [storage.read_json(f) for f in storage.list_files(placement_dir, suffix=".json")]
            if storage.exists(placement_dir)
            else []
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def two_node_run(fsdd_dir, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("two_nodes")
    temp_dir = tempfile.mkdtemp(prefix="mn", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, __file__, str(fsdd_dir), str(work), temp_dir],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout can take the driver's Ray processes down with it
    )
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        end_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"two-node driver exited {proc.returncode}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-6000:]}"
        )
    return json.loads(lines[-1])


@pytest.mark.slow
def test_cluster_has_two_nodes(two_node_run):
    assert len(two_node_run["nodes"]) == 2


@pytest.mark.slow
def test_extraction_tasks_run_on_both_nodes(two_node_run):
    assert two_node_run["extract"] == {"written": 40, "rejected": 0, "train": 20, "test": 20}
    tasks = two_node_run["extract_tasks"]
    assert tasks and all(t["state"] == "FINISHED" for t in tasks), tasks
    assert {t["node_id"] for t in tasks} == set(two_node_run["nodes"]), tasks


@pytest.mark.slow
def test_spread_train_workers_land_on_different_nodes(two_node_run):
    workers = two_node_run["train_workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1], two_node_run.get("train_error")
    assert {w["node_id"] for w in workers} == set(two_node_run["nodes"])


@pytest.mark.slow
def test_training_across_nodes_finishes(two_node_run):
    assert two_node_run["train_error"] is None, two_node_run["train_error"]
    assert two_node_run["train_checkpoint"] and Path(two_node_run["train_checkpoint"]).is_dir()
    metrics = two_node_run["train_metrics"]
    # Every train clip was stepped on once: 2 workers x 2 steps x batch 5, and all test clips evaluated.
    assert (metrics["epoch"], metrics["train_clips"], metrics["val_clips"]) == (1, 20, 20), metrics


if __name__ == "__main__":
    print(json.dumps(_drive(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])), flush=True)
