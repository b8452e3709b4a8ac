"""The command line: fast help without TensorFlow or Ray, one flag name per concept (old spellings hidden
but working), every option's default shown, ``fsdd-vae``, and errors that say what a wrong folder is."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from jobs.__main__ import job_names
from jobs.__main__ import main as fsdd_vae

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
# Runs `python -m JOB ARGS...` in this interpreter, then says on stderr the CPU seconds it took (which a
# busy machine does not inflate, unlike wall time) and which heavy modules it loaded.
RUN_JOB = """
import json, runpy, sys, time
started, code = time.process_time(), 0
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("tensorflow", "keras", "ray") if m in sys.modules)
print(json.dumps({"code": code, "seconds": time.process_time() - started, "heavy": heavy}), file=sys.stderr)
"""
# Old spellings, kept for one release: job, old, new.
ALIASES = [
    ("train", "--storage", "--out"),
    ("tune", "--storage", "--out"),
    ("pipeline", "--storage", "--out"),
    ("preprocess", "--output", "--out"),
    ("fetch_data", "--dest", "--out"),
    ("demo", "--train-budget", "--time-budget"),
    ("train", "--classifier", "--recogniser"),
    ("evaluate", "--classifier", "--recogniser"),
    ("tune", "--classifier", "--recogniser"),
]
REQUIRED = {
    "train": {"--data": "d", "--out": "o", "--name": "n"},
    "tune": {"--data": "d", "--out": "o", "--space": "s.yaml", "--name": "n"},
    "pipeline": {"--input": "i", "--out": "o", "--name": "n", "--space": "s.yaml"},
    "preprocess": {"--input": "i", "--out": "o"},
    "fetch_data": {"--out": "o"},
    "demo": {},
    "evaluate": {"--checkpoint": "c", "--data": "d", "--out": "o"},
}


def run_job(module: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m module args`` in a fresh interpreter: the process, and its exit code, CPU seconds
    and which of TensorFlow, Keras and Ray it imported."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN_JOB, module, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    return proc, json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("name", job_names())
def test_help_is_fast_and_loads_neither_tensorflow_nor_ray(name):
    proc, ran = run_job(f"jobs.{name}", "--help")
    assert ran["code"] == 0 and "--verbose" in proc.stdout, proc.stderr[-2000:]
    assert ran["heavy"] == [] and ran["seconds"] < 2.0, ran


def test_a_bad_option_fails_fast_without_tensorflow_or_ray(tmp_path):
    for module, args in (
        ("jobs.train", ["--data", "d", "--out", str(tmp_path), "--name", "n", "--set", "train.epochs=-1"]),
        ("jobs.pipeline", ["--input", "i", "--out", str(tmp_path), "--name", "n", "--train-only", "--epochs", "0"]),
        ("jobs.evaluate", ["--checkpoint", "c", "--data", "d", "--out", str(tmp_path), "--n-per-digit", "0"]),
        ("jobs.generate", ["--checkpoint", "c", "--out", str(tmp_path), "--digit", "12"]),
    ):
        proc, ran = run_job(module, *args)
        said = "digits are 0-9" if "--digit" in args else "must be positive"
        assert ran["code"] in (1, 2) and said in proc.stderr, proc
        assert ran["heavy"] == [] and ran["seconds"] < 2.0, (module, ran)


def test_evaluate_refuses_a_decoding_choice_it_cannot_make_before_anything_loads(tmp_path):
    base = ["--checkpoint", "c", "--data", "d", "--out", str(tmp_path)]
    for setting, said in (
        ("sampling.harmonic_depth_db=-1", "SamplingConfig.harmonic_depth_db=-1.0 must be in [0, 90]"),
        ("sampling.expost_components=5", "sampling.expost_components: the checkpoint's ex-post mixtures were fitted"),
        ("model.latent_dim=3", "its settings are eval.* (EvalConfig) and sampling.*"),
    ):
        proc, ran = run_job("jobs.evaluate", *base, "--set", setting)
        assert ran["code"] in (1, 2) and said in proc.stderr, proc
        assert ran["heavy"] == [] and ran["seconds"] < 2.0, (setting, ran)


def _parser(name: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"jobs.{name}").build_parser()


def _required(p: argparse.ArgumentParser, action: argparse.Action) -> bool:
    groups = [g for g in p._mutually_exclusive_groups if g.required and action in g._group_actions]
    return action.required or bool(groups)


@pytest.mark.parametrize("name", job_names())
def test_every_option_says_what_it_is_and_what_it_defaults_to(name):
    p = _parser(name)
    formatter = p._get_formatter()
    missing, no_default = [], []
    for action in p._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action)
        if not text.strip():
            missing.append(action.option_strings[0])
        elif action.nargs != 0 and not _required(p, action) and "default" not in text:
            no_default.append(action.option_strings[0])
    assert (missing, no_default) == ([], []), name


def test_one_name_per_concept_across_every_job():
    old = {spelling for _, spelling, _ in ALIASES}
    shown = {name: [o for o in _parser(name).format_help().split() if o.strip("[],") in old] for name in job_names()}
    assert {name: found for name, found in shown.items() if found} == {}


@pytest.mark.parametrize("name,old,new", ALIASES)
def test_an_old_spelling_still_works(name, old, new):
    value = "120" if new == "--time-budget" else "somewhere"
    others = [x for option, v in REQUIRED[name].items() if option != new for x in (option, v)]
    with_new = _parser(name).parse_args([*others, new, value])
    assert vars(_parser(name).parse_args([*others, old, value])) == vars(with_new)
    assert getattr(with_new, new.lstrip("-").replace("-", "_")) == (120.0 if new == "--time-budget" else value)


def test_fsdd_vae_lists_every_job_and_runs_each_as_python_m(capsys):
    assert fsdd_vae(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in job_names():
        assert any(line.split()[:1] == [name] and len(line.split()) > 1 for line in listing.splitlines()), name
    with pytest.raises(SystemExit):
        fsdd_vae(["train", "--help"])
    via_script = capsys.readouterr().out
    with pytest.raises(SystemExit):
        importlib.import_module("jobs.train").main(["--help"])
    assert via_script == capsys.readouterr().out
    assert fsdd_vae(["nonsense"]) == 2 and "no job 'nonsense'" in capsys.readouterr().err
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"fsdd-vae": "jobs.__main__:main"}


# ------------------------------------------------------------------ a folder that is not a checkpoint


@pytest.fixture(scope="module")
def folders(fsdd_dir, tmp_path_factory):
    """A training run of two tiny checkpoints (the older one scored best), a Parquet dataset, a digit
    recogniser's folder (its config; no job here gets as far as its weights) and a folder of one WAV."""
    import pyarrow.parquet as pq
    from tiny_checkpoint import make_checkpoint

    from vae import checkpoint, dataset, storage
    from vae.config import FeatureConfig, RecogniserConfig, preset, to_dict

    root = tmp_path_factory.mktemp("folders")
    first = make_checkpoint(root / "run" / "checkpoint_0001", fsdd_dir)
    shutil.copytree(first, root / "run" / "checkpoint_0002")
    for name, mse in (("checkpoint_0001", 0.05), ("checkpoint_0002", 0.08)):
        checkpoint.write_json(str(root / "run" / name), checkpoint.METRICS, {"epoch": 1, "val_recon_mse": mse})
    part = next((DATA / "old_layouts" / "dataset").glob("part-*.parquet"))
    dataset.write_dataset(str(root / "features"), pq.read_table(part))
    recogniser = {"features": to_dict(preset(FeatureConfig, "default")), "recogniser": to_dict(RecogniserConfig())}
    storage.write_json(str(root / "recogniser" / "config.json"), recogniser)
    (root / "wavs").mkdir()
    shutil.copy(fsdd_dir / "3_theo_4.wav", root / "wavs")
    return root


def _error(capsys) -> str:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


def test_a_run_given_as_a_checkpoint_lists_its_checkpoints_and_names_the_best(folders, tmp_path):
    run = str(folders / "run")
    proc, ran = run_job("jobs.generate", "--checkpoint", run, "--out", str(tmp_path / "gen"))
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert ran["code"] == 1 and ran["heavy"] == [], ran
    assert f"{run} is a training run, not a checkpoint" in error
    assert f"--checkpoint {run}/checkpoint_0001" in error and "checkpoint_0002 (val_recon_mse 0.08)" in error


@pytest.mark.parametrize(
    "folder,says",
    [
        ("features", "is a Parquet dataset (jobs.preprocess), not a checkpoint: pass it as --data"),
        ("recogniser", "is a digit recogniser (jobs.train_classifier), not a VAE checkpoint: pass it as --recogniser"),
    ],
)
def test_a_dataset_or_a_recogniser_given_as_a_checkpoint_is_named(folders, tmp_path, capsys, folder, says):
    from jobs import evaluate, generate, reconstruct, serve

    uri, out = str(folders / folder), str(tmp_path / "out")
    for main, args in (
        (generate.main, ["--checkpoint", uri, "--out", out]),
        (reconstruct.main, ["--checkpoint", uri, "--input", str(folders / "wavs"), "--out", out]),
        (evaluate.main, ["--checkpoint", uri, "--data", uri, "--out", out]),
        (serve.main, ["--checkpoint", uri]),
    ):
        assert main(args) == 1
        assert f"{uri} {says}" in _error(capsys), main


def test_a_checkpoint_or_a_dataset_given_as_the_recogniser_is_named(folders, tmp_path, capsys):
    from jobs import evaluate, train

    ckpt, features = str(folders / "run" / "checkpoint_0001"), str(folders / "features")
    args = ["--data", features, "--out", str(tmp_path), "--name", "r", "--model", "tiny", "--recogniser", ckpt]
    assert train.main(args) == 1
    assert f"{ckpt} is a VAE checkpoint, not a recogniser" in _error(capsys)
    assert not (tmp_path / "r").exists()
    args = ["--checkpoint", ckpt, "--data", features, "--out", str(tmp_path / "ev"), "--recogniser", features]
    assert evaluate.main(args) == 1
    assert f"{features} is a Parquet dataset (jobs.preprocess), not a recogniser" in _error(capsys)


def test_ranking_a_run_by_its_samples_without_a_recogniser_is_refused_before_it_starts(folders, tmp_path, capsys):
    from jobs import train

    features = str(folders / "features")
    args = f"--data {features} --out {tmp_path} --name r --model tiny --set train.rank_by=samples".split()
    assert train.main(args) == 1
    assert "TrainConfig.rank_by='samples' ranks checkpoints by what a recogniser hears" in _error(capsys)
    assert not (tmp_path / "r").exists()
    assert train.main([*args[:-1], "train.rank_by=loudness"]) == 1
    assert "TrainConfig.rank_by='loudness'; choose from ['val_recon_mse', 'samples']" in _error(capsys)


def test_a_sweep_refuses_to_be_told_how_to_rank_its_trials(folders, tmp_path, capsys):
    from jobs import tune

    features = str(folders / "features")
    args = f"--data {features} --out {tmp_path} --name s --space tune_spaces/smoke.yaml --set train.rank_by=samples"
    assert tune.main(args.split()) == 1
    assert "train.rank_by: a sweep ranks every trial's checkpoints by its objective" in _error(capsys)
    assert not (tmp_path / "s").exists()


def test_a_digit_out_of_range_is_refused_before_anything_loads(capsys):
    from jobs import generate, reconstruct

    for main, args in (
        (generate.main, ["--checkpoint", "c", "--out", "o", "--digit", "12"]),
        (reconstruct.main, ["--checkpoint", "c", "--input", "i", "--out", "o", "--digit", "-1"]),
    ):
        with pytest.raises(SystemExit) as exit:
            main(args)
        assert exit.value.code == 2 and "digits are 0-9" in capsys.readouterr().err
