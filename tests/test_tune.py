"""Sweeps on Ray Tune against a real HTTP S3 endpoint: smoke sweep, report, best/, resume after a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest

from vae import storage
from vae.objective import objective
from vae.tuning import SweepNotFound, load_trials

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_job(module: str, *args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v and "://" not in v and not v.startswith("#")]


def test_objective_does_not_scale_with_reconstruction_weight():
    # Same reconstruction quality and sample accuracy, any weight: same objective.
    assert objective(0.01, 0.04, {"digit_accuracy": 0.9}) == pytest.approx(0.25 + 0.1)
    assert objective(0.04, 0.04) == pytest.approx(1.0)


def test_objective_adds_the_voicing_the_samples_lack_and_the_held_out_speakers_reconstruction():
    from vae.objective import describe

    whisper = {"digit_accuracy": 0.9, "voicing_samples": 0.2, "held_out_recon_mse": 0.02}
    assert objective(0.01, 0.04, whisper, voicing_floor=0.8) == pytest.approx(0.25 + 0.1 + 0.75 + 0.5)
    voice = {**whisper, "voicing_samples": 0.9}  # more voiced than the vocoder's floor: no bonus, no penalty
    assert objective(0.01, 0.04, voice, voicing_floor=0.8) == pytest.approx(0.25 + 0.1 + 0.5)
    assert describe(("voicing", "held_out"), recogniser=False) == (
        "val_recon_mse / val_variance + max(0, 1 - voicing_samples / voicing_floor) + held_out_recon_mse / val_variance"
    )


def test_a_sweep_trial_ranks_and_keeps_its_checkpoints_by_the_objective(tmp_path):
    from types import SimpleNamespace

    from vae import checkpoint as ckpt_lib
    from vae.config import RunConfig
    from vae.objective import OBJECTIVE, SCORE_METRIC, Ranking
    from vae.training import build_trainer
    from vae.worker import Worker, rank_epoch

    assert Ranking().metric == SCORE_METRIC and Ranking(val_variance=0.04).metric == OBJECTIVE
    trainer = build_trainer(RunConfig(), {}, "/tmp/unused", "run", 100, ranking=Ranking(val_variance=0.04))
    assert trainer.run_config.checkpoint_config.checkpoint_score_attribute == OBJECTIVE

    class Heard(Worker):
        def measure(self, checkpoint) -> dict[str, float]:
            return {"digit_accuracy": 0.9, "voicing_samples": 0.35}

    ranking = Ranking(val_variance=0.04, scorer=lambda loaded: {}, voicing_floor=0.7)
    worker = Heard(RunConfig(), "run", 0, 1, None, {}, {}, 1, 1, ranking)
    at_checkpoint, between = {"val_recon_mse": 0.01}, {"val_recon_mse": 0.01}
    saved = SimpleNamespace(path=str(tmp_path))
    (tmp_path / ckpt_lib.METRICS).write_text('{"epoch": 3, "val_recon_mse": 0.01}')
    rank_epoch(worker, at_checkpoint, checkpoint=saved)
    rank_epoch(worker, between, checkpoint=None)
    assert at_checkpoint == {
        "val_recon_mse": 0.01,
        "digit_accuracy": 0.9,
        "voicing_samples": 0.35,
        "val_unexplained_variance": 0.25,
        OBJECTIVE: pytest.approx(0.25 + 0.1 + 0.5),
    }
    # the checkpoint's own metrics say what it was ranked by, as they do every other metric of its epoch
    assert ckpt_lib.read_metrics(str(tmp_path)) == {"epoch": 3, **at_checkpoint}
    # an epoch without a checkpoint carries the latest measurements into its objective, not into its metrics
    assert between[OBJECTIVE] == pytest.approx(0.85) and "digit_accuracy" not in between
    untouched = {"val_recon_mse": 0.01}
    rank_epoch(Heard(RunConfig(), "run", 0, 1, None, {}, {}, 1, 1), untouched, checkpoint=object())
    assert untouched == {"val_recon_mse": 0.01}  # a single run ranks by val_recon_mse as reported


def test_a_trials_best_epoch_is_one_it_measured_and_kept():
    from vae.tuning import TrialRecord

    history = [
        {"epoch": 1, "objective": 0.3},  # before the first checkpoint: reconstruction alone, not comparable
        {"epoch": 2, "objective": 0.9, "checkpoint_path": "c2"},
        {"epoch": 3, "objective": 0.7, "checkpoint_path": "c3"},
    ]
    assert TrialRecord("t", "TERMINATED", {}, history).best_row()["epoch"] == 3
    assert TrialRecord("t", "RUNNING", {}, history[:1]).best_row()["epoch"] == 1


def test_the_report_says_why_a_trial_stopped_before_its_last_epoch():
    from vae.reports.sweep import trial_rows
    from vae.tuning import TrialRecord

    budget = TrialRecord("a", "TERMINATED", {}, [{"epoch": 7, "objective": 1.0, "stopped_by_time_budget": True}])
    asha = TrialRecord("b", "TERMINATED", {}, [{"epoch": 3, "objective": 1.0, "stopped_by_time_budget": False}])
    patient = TrialRecord("c", "TERMINATED", {}, [{"epoch": 9, "objective": 1.0, "stopped_by_patience": True}])
    notes = [row["note"] for row in trial_rows([budget, asha, patient], max_epochs=200)]
    assert notes == [
        "stopped by its time budget after epoch 7",
        "early-stopped by the scheduler after epoch 3",
        "stopped after epoch 9: no better checkpoint for train.patience checkpoints",
    ]


def test_a_sweep_hands_its_trials_a_scorer_that_travels_without_its_loaded_recogniser():
    import pickle

    from vae.evaluation.evaluators.samples import SampleScorer
    from vae.tuning import _scorer

    assert _scorer({"recogniser": None, "settings": {}}, "data") is None
    scorer = _scorer({"recogniser": "rec", "settings": {"n_per_digit": 5}}, "data")
    assert scorer == SampleScorer("rec", n_per_digit=5, data_uri="data")
    voice = _scorer({"recogniser": None, "settings": {"objective": ["voicing"]}}, "data")
    assert voice == SampleScorer(None, terms=("voicing",), data_uri="data")  # voicing needs no recogniser
    scorer._recogniser, scorer._held_out = object(), {}  # read by rank 0 at its first checkpoint
    again = pickle.loads(pickle.dumps(scorer))
    assert again == scorer and again._recogniser is None and again._held_out is None


def test_malformed_space_fails_before_any_trial(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  model.latent_dimm: {choice: [2, 4]}\n")
    t0 = time.time()
    proc = run_job(
        "jobs.tune",
        "--data",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "s"),
        "--space",
        str(bad),
        "--name",
        "x",
    )
    assert proc.returncode != 0
    assert "params.model.latent_dimm" in proc.stderr
    assert not (tmp_path / "s").exists(), "nothing may be written for a malformed space"
    assert time.time() - t0 < 60


def test_a_sweep_that_cannot_start_leaves_nothing_behind(ray_local, small_parquet, tmp_path, capsys):
    """Bad settings of the scheduler (grace_period above train.epochs) or data that is not a published
    dataset: one clear error, no experiment folder, and the same --name can be used at once."""
    from jobs import tune as tune_job

    space = tmp_path / "space.yaml"
    space.write_text(
        "fixed: {train.epochs: 2}\nparams:\n  model.latent_dim: {choice: [2]}\nscheduler: {type: asha, grace_period: 3}\n"
    )
    storage_dir = tmp_path / "sweeps"
    assert (
        tune_job.main(["--data", small_parquet, "--out", str(storage_dir), "--space", str(space), "--name", "x"]) == 1
    )
    assert "scheduler.grace_period" in last_json(capsys.readouterr().out)["error"]
    (tmp_path / "not-a-dataset").mkdir()
    assert (
        tune_job.main(
            [
                "--data",
                str(tmp_path / "not-a-dataset"),
                "--out",
                str(storage_dir),
                "--space",
                "tune_spaces/smoke.yaml",
                "--name",
                "x",
            ]
        )
        == 1
    )
    assert "not-a-dataset" in last_json(capsys.readouterr().out)["error"]
    args = ["--data", small_parquet, "--out", str(storage_dir), "--space", "tune_spaces/smoke.yaml", "--name", "x"]
    assert tune_job.main([*args, "--objective", "held_out"]) == 1  # and no speaker held out to score
    assert "train.held_out_speaker" in last_json(capsys.readouterr().out)["error"]
    assert not (storage_dir / "x").exists()


@pytest.fixture(scope="module")
def smoke_sweep(ray_local, small_parquet, make_bucket, recogniser_dir):
    bucket = make_bucket("sweeps")
    proc = run_job(
        "jobs.tune",
        "--data",
        small_parquet,
        "--out",
        bucket,
        "--space",
        "tune_spaces/smoke.yaml",
        "--name",
        "smoke",
        "--max-concurrent",
        "2",
        "--recogniser",
        recogniser_dir,
        "--n-per-digit",
        "1",
        "--objective",
        "voicing",
        "held_out",
        "--set",
        "train.held_out_speaker=theo",
        env={"RAY_ADDRESS": ray_local},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return f"{bucket}/smoke", last_json(proc.stdout), proc


def test_smoke_sweep_writes_trials_best_and_report_to_s3(smoke_sweep, tmp_path, ray_local):
    exp, out, _ = smoke_sweep
    trials = load_trials(exp)
    assert len(trials) == 4
    assert all(t.status == "TERMINATED" for t in trials)
    assert all(t.history and "objective" in t.history[-1] for t in trials)
    for t in trials:
        # Ranked by what users hear (digit accuracy of every checkpoint's samples), and kept by it:
        # each trial's best epoch by the objective still has its checkpoint.
        best_row = t.best_row()
        assert 0 <= best_row["digit_accuracy"] <= 1 and 0 <= best_row["voicing_samples"] <= 1, best_row
        assert best_row["held_out_recon_mse"] > 0, best_row
        assert storage.exists(storage.ray_uri(best_row["checkpoint_path"])), (t.trial_id, best_row["epoch"])
    # each trial is a Train run of its own, checkpoints in the bucket
    ckpts = storage.list_files(storage.join(exp, "trials"), "weights.h5")
    assert ckpts and all(c.startswith("s3://sweeps/smoke/trials/") for c in ckpts)

    best = storage.published(storage.join(exp, "best"))
    for name in ("config.json", "metrics.json", "latent_stats.json", "sweep_best.json"):
        assert storage.exists(storage.join(best, name)), name
    assert len(storage.list_files(storage.join(best, "samples"), ".wav")) == 20
    assert out["best_checkpoint"] == f"{exp}/best"

    gen = run_job(
        "jobs.generate", "--checkpoint", f"{exp}/best", "--out", str(tmp_path / "gen"), "--n", "2", "--digit", "3"
    )
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert {"3_0.wav", "3_1.wav"} <= set(os.listdir(tmp_path / "gen"))


def test_sweep_report_references_only_existing_files(smoke_sweep, tmp_path):
    exp, out, _ = smoke_sweep
    report = storage.join(exp, "report")
    for name in ("index.html", "summary.json", "trials.csv", "report.md"):
        assert storage.exists(storage.join(report, name)), name
    parser = Links()
    parser.feed(storage.read_text(storage.join(report, "index.html")))
    assert any(r.endswith(".wav") for r in parser.refs) and any(r.endswith(".png") for r in parser.refs)
    missing = [r for r in parser.refs if not storage.exists(storage.join(report, r))]
    assert not missing
    summary = storage.read_json(storage.join(report, "summary.json"))
    assert summary["trials"] == 4 and summary["best"]["trial_id"]
    assert summary["objective"].endswith("+ held_out_recon_mse / val_variance")
    assert 0.3 < summary["sweep"]["voicing_floor"] < 1  # real clips through the vocoder are mostly voiced
    rows = storage.read_text(storage.join(report, "trials.csv")).strip().splitlines()
    assert len(rows) == 5

    # rebuilt from storage alone
    proc = run_job("jobs.report", "--experiment", exp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json(proc.stdout)["trials"] == 4


def test_killed_driver_resumes_without_rerunning_finished_trials(ray_local, small_parquet, tmp_path):
    storage_dir = str(tmp_path / "store")
    # Two trials are enough to kill the driver between a finished one and one in flight.
    args = [
        "--data",
        small_parquet,
        "--out",
        storage_dir,
        "--space",
        "tune_spaces/smoke.yaml",
        "--name",
        "resumable",
        "--max-concurrent",
        "1",
        "--num-samples",
        "2",
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_local}
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.tune", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = os.path.join(storage_dir, "resumable")
    deadline = time.time() + 600
    finished = []
    while time.time() < deadline and driver.poll() is None:
        time.sleep(3)
        try:
            finished = [t for t in load_trials(exp) if t.status == "TERMINATED"]
        except SweepNotFound:  # no tune/ folder yet, or Ray Tune has not written its state into it yet
            continue
        if finished:
            break
    assert driver.poll() is None, "the sweep ended before it could be interrupted"
    assert finished, "no trial finished in time"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {t.trial_id: len(t.history) for t in load_trials(exp) if t.status == "TERMINATED"}

    proc = run_job("jobs.tune", *args, "--resume", env={"RAY_ADDRESS": ray_local})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    trials = load_trials(exp)
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials)
    for trial_id, n in before.items():
        again = next(t for t in trials if t.trial_id == trial_id)
        assert len(again.history) == n, f"finished trial {trial_id} ran again"
    assert os.path.isfile(os.path.join(exp, "report", "index.html"))
    assert last_json(proc.stdout)["trials"] == 2


def test_no_credentials_are_written_to_the_bucket(smoke_sweep, s3_endpoint):
    """Ray pickles the filesystem it is handed (tune/tuner.pkl, the searcher's state): the sweep's
    files in the bucket, Tune's own included, must not hold the keys of the process that ran it."""
    import boto3
    from conftest import S3_ENV

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"])
    secrets = [S3_ENV["AWS_ACCESS_KEY_ID"].encode(), S3_ENV["AWS_SECRET_ACCESS_KEY"].encode()]
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="sweeps")
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith("smoke/tune/") for k in keys), "Tune's own state is among what was searched"
    leaked = [k for k in keys if any(s in client.get_object(Bucket="sweeps", Key=k)["Body"].read() for s in secrets)]
    assert leaked == []


def test_report_after_an_interrupted_publish_does_not_call_best_published(smoke_sweep, tmp_path):
    exp, _, _ = smoke_sweep
    copy = exp + "-interrupted"
    storage.copy_tree(exp, copy)
    storage.delete_tree(storage.join(copy, "best", storage.PUBLISHED_POINTER))  # the version folder stays
    proc = run_job("jobs.report", "--experiment", copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no published version (a publish was interrupted)" in proc.stdout
    summary = storage.read_json(storage.join(copy, "report", "summary.json"))
    assert summary["best_checkpoint"] is None
    assert "Published to" not in storage.read_text(storage.join(copy, "report", "index.html"))
