"""One override path for every job: --config FILE, shorthand flags and --set KEY=VALUE (vae.overrides, jobs._cli)."""

from __future__ import annotations

import json
import os

import pytest

from jobs import _cli
from vae.config import (
    ConfigError,
    DemoConfig,
    EvalConfig,
    FaultConfig,
    IngestConfig,
    ModelConfig,
    RecogniserConfig,
    RunConfig,
    ServeConfig,
    SweepConfig,
    preset,
)
from vae.errors import UserError
from vae.overrides import apply_overrides, apply_run_overrides, parse_assignment, read_file, split


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.epochs=5", "train.epochs", 5),
        ("train.learning_rate=1e-3", "train.learning_rate", 1e-3),
        ("loss.recon_weight=1.0e4", "loss.recon_weight", 1e4),
        ("train.use_gpu=true", "train.use_gpu", True),
        ("model.filters=[8, 16]", "model.filters", [8, 16]),
        ("prior.kind=mixture", "prior.kind", "mixture"),
        (" sweep.num_samples = 4", "sweep.num_samples", 4),
    ],
)
def test_set_values_are_read_as_yaml_scalars(text, key, value):
    assert parse_assignment(text) == (key, value)


def test_set_without_an_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("train.epochs")


def test_overrides_apply_with_their_types_and_are_validated():
    cfg = apply_overrides(
        RunConfig(),
        dict(
            [
                parse_assignment(t)
                for t in (
                    "train.learning_rate=3e-4",
                    "model.filters=[8, 16]",
                    "model.kernels=[3, 3]",
                    "model.strides=[2, 2]",
                    "model.conditional=false",
                )
            ]
        ),
    )
    assert cfg.train.learning_rate == 3e-4 and isinstance(cfg.train.learning_rate, float)
    assert (cfg.model.filters, cfg.model.strides, cfg.model.conditional) == ((8, 16), (2, 2), False)
    assert apply_overrides(SweepConfig(), {"num_samples": 4}).num_samples == 4


@pytest.mark.parametrize(
    "overrides, culprit",
    [
        ({"train.epochz": 3}, "train.epochz: unknown config key 'epochz' in TrainConfig"),
        ({"trian.epochs": 3}, "trian.epochs: unknown config key 'trian' in RunConfig"),
        ({"train.epochs.x": 3}, "train.epochs.x: TrainConfig.epochs is a value"),
        ({"train": 3}, "train: is a section"),
        ({"train.epochs": "ten"}, "RunConfig.train.epochs: expected an integer"),
        ({"train.learning_rate": -1.0}, "TrainConfig.learning_rate"),
        ({"train.use_gpu": "maybe"}, "RunConfig.train.use_gpu"),
    ],
)
def test_unknown_keys_and_bad_values_name_the_key(overrides, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.").replace("(", r"\(")):
        apply_overrides(RunConfig(), overrides)


def test_a_run_config_takes_its_features_from_the_data():
    with pytest.raises(ConfigError, match="features.n_fft"):
        apply_run_overrides(RunConfig(), {"features.n_fft": 512})


def test_split_sends_each_root_its_keys():
    parts = split({"sweep.num_samples": 2, "train.epochs": 3, "fault.epoch": 2}, ["sweep", "fault"])
    assert parts == {"sweep": {"num_samples": 2}, "fault": {"epoch": 2}, "": {"train.epochs": 3}}


def test_config_files_are_nested_sections(tmp_path):
    yml = tmp_path / "run.yaml"
    yml.write_text("train: {epochs: 4, learning_rate: 1e-3}\nsweep:\n  num_samples: 2\n")
    assert read_file(yml) == {"train.epochs": 4, "train.learning_rate": 1e-3, "sweep.num_samples": 2}
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"model": {"latent_dim": 8}}))
    assert read_file(js) == {"model.latent_dim": 8}
    (tmp_path / "list.yaml").write_text("- 1\n")
    for bad, why in ((tmp_path / "list.yaml", "expected a mapping"), (tmp_path / "none.yaml", "cannot be read")):
        with pytest.raises(ConfigError, match=why):
            read_file(bad)


def test_config_file_then_shorthands_then_set(tmp_path):
    """What jobs.train builds: the --model preset, the file, the flags, --set last; fault keys apart."""
    from jobs.train import build_config, parse_args

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train: {epochs: 4, batch_size: 8}\nprior: {kind: mixture}\n")
    args = parse_args(
        [
            "--data",
            "d",
            "--out",
            "s",
            "--name",
            "n",
            "--model",
            "tiny",
            "--config",
            str(cfg_file),
            "--epochs",
            "6",
            "--lr",
            "2e-3",
            "--set",
            "train.epochs=7",
            "--set",
            "sampling.sampler=prior",
            "--fault-epoch",
            "2",
        ]
    )
    run_cfg, fault = build_config(args, None)
    assert run_cfg.model == preset(ModelConfig, "tiny")
    assert (run_cfg.train.epochs, run_cfg.train.batch_size, run_cfg.train.learning_rate) == (7, 8, 2e-3)
    assert (run_cfg.prior.kind, run_cfg.sampling.sampler) == ("mixture", "prior")
    assert fault == FaultConfig(epoch=2)
    with pytest.raises(ConfigError, match="train.epochz"):
        build_config(parse_args(["--data", "d", "--out", "s", "--name", "n", "--set", "train.epochz=1"]), None)


def test_tune_pipeline_and_demo_build_their_configs_the_same_way():
    from jobs import demo, pipeline, tune

    settings, base = tune.configs(
        tune.parse_args(
            [
                "--data",
                "d",
                "--out",
                "s",
                "--space",
                "x.yaml",
                "--name",
                "n",
                "--num-samples",
                "3",
                "--set",
                "sweep.max_failures=0",
                "--set",
                "train.time_budget_s=60",
            ]
        )
    )
    assert (settings.num_samples, settings.max_failures, settings.n_per_digit) == (3, 0, SweepConfig.n_per_digit)
    assert base.train.time_budget_s == 60
    with pytest.raises(ConfigError, match="model.latent_dim"):
        tune.configs(
            tune.parse_args(["--data", "d", "--out", "s", "--space", "x", "--name", "n", "--set", "model.latent_dim=4"])
        )

    cfg, sweep = pipeline.configs(
        pipeline.parse_args(
            [
                "--input",
                "i",
                "--out",
                "s",
                "--name",
                "n",
                "--train-only",
                "--epochs",
                "3",
                "--use-gpu",
                "--workers-per-trial",
                "2",
            ]
        )
    )
    assert (cfg.train.epochs, cfg.train.use_gpu, cfg.train.num_workers) == (3, True, 1)
    assert (sweep.use_gpu, sweep.workers_per_trial) == (True, 2)

    cfg = demo.run_config(demo.parse_args(["--epochs", "5", "--set", "prior.kind=tied"]))
    assert (cfg.train.epochs, cfg.train.time_budget_s, cfg.prior.kind) == (5, DemoConfig.train_budget_s, "tied")
    assert demo.run_config(demo.parse_args([])) == DemoConfig().run_config()


@pytest.mark.parametrize(
    "cfg, culprit",
    [
        (SweepConfig(num_samples=0), "num_samples"),
        (SweepConfig(max_concurrent=-1), "max_concurrent"),
        (SweepConfig(n_per_digit=0), "n_per_digit"),
        (SweepConfig(max_failures=-2), "max_failures"),
        (SweepConfig(grace_period=0), "grace_period"),
        (SweepConfig(reduction_factor=1.0), "reduction_factor"),
        (SweepConfig(workers_per_trial=0), "workers_per_trial"),
    ],
)
def test_sweep_config_is_validated(cfg, culprit):
    with pytest.raises(ConfigError, match=f"SweepConfig.{culprit}"):
        cfg.validate()


def test_sweep_config_defaults_are_the_ones_the_sweep_used():
    cfg = SweepConfig().validate()
    assert (cfg.num_samples, cfg.max_concurrent, cfg.n_per_digit, cfg.max_failures) == (None, None, 3, 1)
    assert (cfg.grace_period, cfg.reduction_factor, cfg.search_seed, cfg.workers_per_trial, cfg.use_gpu) == (
        1,
        3.0,
        0,
        1,
        False,
    )


def test_the_fault_switch_travels_in_the_loop_config_only():
    from vae.worker import loop_config

    config = loop_config(RunConfig(), "runs/x", 10, fault=FaultConfig(epoch=2, rank=0))
    assert config["fault"] == {"epoch": 2, "rank": 0}
    assert "fault" not in json.dumps(config["run_config"])


def test_run_turns_a_user_error_into_exit_1_and_a_json_line(capsys):
    def body() -> int:
        raise UserError("no such thing: x")

    assert _cli.run("job", body) == 1
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1]) == {"error": "no such thing: x"}
    assert err.strip() == "job: error: no such thing: x"
    assert _cli.run("job", lambda: 0) == 0
    with pytest.raises(KeyError):  # a bug stays a traceback
        _cli.run("job", lambda: {}["x"])


def test_every_job_documents_set(capsys):
    from jobs import demo, pipeline, train, tune

    for job in (train, tune, pipeline, demo):
        with pytest.raises(SystemExit):
            job.parse_args(["--help"])
        assert "--set KEY=VALUE" in capsys.readouterr().out, job.__name__


def test_jobs_log_one_line_per_phase_and_every_line_with_verbose(capsys, monkeypatch):
    import logging

    from vae import console

    for key in (*console.QUIET_ENV, console.VERBOSE_ENV):  # restored after the test: a job sets them
        monkeypatch.delenv(key, raising=False)

    def body() -> int:
        logging.getLogger("vae.pipeline").info("train: started")
        logging.getLogger("vae.evaluation.audio").debug("griffin-lim: 32/250 clips")
        return 0

    assert _cli.run("job", body) == 0
    err = capsys.readouterr().err
    assert "vae.pipeline] train: started" in err and "griffin-lim" not in err
    assert _cli.run("job", body, verbose=True) == 0
    err = capsys.readouterr().err
    assert "train: started" in err and "vae.evaluation.audio] griffin-lim: 32/250 clips" in err
    assert err.count("train: started") == 1  # one handler, however many jobs ran in this process
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and console.is_verbose()


def test_every_job_takes_verbose(capsys):
    import importlib
    import pkgutil

    import jobs

    names = [m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.name.startswith("_")]
    assert len(names) >= 13
    for name in names:
        with pytest.raises(SystemExit):
            importlib.import_module(f"jobs.{name}").main(["--help"])
        assert "--verbose" in capsys.readouterr().out, name


@pytest.mark.parametrize(
    "job, required, flag, key, root",
    [
        (
            "evaluate",
            ["--checkpoint", "c", "--data", "d", "--out", "o"],
            ["--n-per-digit", "4"],
            "n_unconditional",
            "eval",
        ),
        ("serve", ["--checkpoint", "c"], ["--max-clips", "4"], "max_upload_seconds", "serve"),
        (
            "ingest",
            ["--input", "i", "--digits", "01", "--speaker", "s", "--out", "o"],
            ["--top-db", "4"],
            "min_utterance_seconds",
            "ingest",
        ),
        ("train_classifier", ["--data", "d", "--out", "o"], ["--epochs", "4"], "batch_size", "recogniser"),
    ],
)
def test_every_job_with_a_config_takes_set_on_top_of_its_flags(job, required, flag, key, root):
    import importlib

    module = importlib.import_module(f"jobs.{job}")
    cls = {"eval": EvalConfig, "serve": ServeConfig, "ingest": IngestConfig, "recogniser": RecogniserConfig}[root]
    args = module.parse_args([*required, *flag, "--set", f"{root}.{key}=3"])
    cfg = _cli.job_config(args, cls, root, module.SHORTHANDS)
    shorthand = module.SHORTHANDS[flag[0][2:].replace("-", "_")].split(".", 1)[1]
    assert getattr(cfg, shorthand) == 4 and getattr(cfg, key) == 3
    assert _cli.job_config(module.parse_args(required), cls, root, module.SHORTHANDS) == cls()  # defaults: the config's
    with pytest.raises(ConfigError, match=f"train.epochs: not a key of this job; its settings are {root}"):
        _cli.job_config(module.parse_args([*required, "--set", "train.epochs=3"]), cls, root, module.SHORTHANDS)
    with pytest.raises(ConfigError, match=f"{root}.nope"):
        _cli.job_config(module.parse_args([*required, "--set", f"{root}.nope=3"]), cls, root, module.SHORTHANDS)


def test_train_classifier_no_gl_augment_is_a_shorthand():
    from jobs import train_classifier

    args = train_classifier.parse_args(["--data", "d", "--out", "o", "--no-gl-augment"])
    assert _cli.job_config(args, RecogniserConfig, "recogniser", train_classifier.SHORTHANDS).gl_augment is False


@pytest.mark.parametrize(
    "job, required, flag",
    [
        ("preprocess", ["--input", "i", "--out", "o"], "--num-cpus"),
        ("preprocess", ["--input", "i", "--out", "o"], "--blocks"),
        ("train", ["--data", "d", "--out", "s", "--name", "n"], "--num-cpus"),
        ("tune", ["--data", "d", "--out", "s", "--space", "x.yaml", "--name", "n"], "--num-cpus"),
        ("pipeline", ["--input", "i", "--out", "s", "--name", "n", "--train-only"], "--num-cpus"),
        ("serve", ["--checkpoint", "c"], "--num-cpus"),
    ],
)
@pytest.mark.parametrize(
    "value, says",
    [
        ("0", "must be at least 1, got 0"),
        ("-2", "must be at least 1, got -2"),
        ("two", "expected a whole number, got 'two'"),
    ],
)
def test_counts_below_one_are_refused_naming_the_flag(job, required, flag, value, says, capsys):
    """A local instance of 0 CPUs would never run a task (the job hung); 0 blocks failed inside Ray Data."""
    import importlib

    module = importlib.import_module(f"jobs.{job}")
    assert getattr(module.parse_args([*required, flag, "3"]), flag[2:].replace("-", "_")) == 3
    with pytest.raises(SystemExit) as info:
        module.parse_args([*required, flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: {says}" in capsys.readouterr().err
