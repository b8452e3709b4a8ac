"""Hyperparameter sweeps: many Ray Train runs under Ray Tune, ranked by what users hear.

Layout of an experiment ``<storage>/<EXP>/``::

    tune/      Ray Tune's own state (for --resume) and per-trial result.json
    trials/    one Ray Train run per trial (the training job's code path), best checkpoints only
    best/      the overall best checkpoint, published all-or-nothing (storage.publish)
    report/    index.html, summary.json, trials.csv, report.md
    sweep.json the space, data, base RunConfig and SweepConfig ("settings") the sweep was started with

The objective is weight independent. Total loss scales with the reconstruction
weight, so ranking by it only finds the smallest weight. Instead::

    objective = val_recon_mse / val_variance  +  (1 - digit_accuracy)
                [+ max(0, 1 - voicing_samples / voicing_floor)]  [+ held_out_recon_mse / val_variance]

The first term is the fraction of the validation spectrograms' variance the
model fails to reconstruct (0 = perfect, 1 = no better than the mean clip); the
second is the share of digit-conditional samples, rendered to audio by
Griffin-Lim, that the independent recogniser does not hear as the digit asked
for. Without a recogniser the second term is left out. ``SweepConfig.objective``
adds the bracketed terms (:func:`vae.objective.objective`): the share of the vocoder
floor's voiced frames those samples lack, and the first term for the speaker the
trials hold out of training (``train.held_out_speaker``), on that speaker's train-split
takes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vae import compat, console, storage
from vae.config import EvalConfig, RunConfig, SweepConfig, from_dict, to_dict
from vae.errors import UserError
from vae.objective import OBJECTIVE, Ranking, Scorer
from vae.runlock import RunLock
from vae.search_space import SearchSpace, SpaceError, asha_settings

TRIAL_DRIVER_CPU = 0.01
TUNE_DIR, TRIALS_DIR, BEST_DIR, REPORT_DIR = "tune", "trials", "best", "report"
SWEEP_FILE = "sweep.json"


class SweepNotFound(UserError, FileNotFoundError):
    """No sweep where one was named (to resume, or to report on)."""


class SweepExists(UserError, FileExistsError):
    """A new sweep was given the name of an existing one."""


def data_variance(data_uri: str, split: str = "test") -> float:
    """Mean per-pixel variance of a split's spectrograms: the MSE of always predicting the mean clip."""
    from vae.dataset import load_split_numpy

    specs = load_split_numpy(data_uri, split, columns=["spectrogram"])["spectrogram"]
    return float(np.mean(np.var(specs.astype(np.float64), axis=0)))


def _trial(
    params: dict,
    *,
    space: SearchSpace,
    base: dict,
    data_uri: str,
    exp_uri: str,
    sweep: dict,
    datasets: dict,
    tracking: dict | None = None,
) -> None:
    """One Tune trial: the training job's own ``fit`` with the sampled config. ``tracking``: the sweep
    driver's MLflow settings (vae.tracking), which a trial's process does not inherit."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from vae.training import NothingToTrain, fit

    trial_id = ray.tune.get_context().get_trial_id()
    run_cfg = space.run_config(compat.trial_params(params), from_dict(RunConfig, base))
    # The trial's driver holds TRIAL_DRIVER_CPU; its workers take the rest of their CPUs, so
    # N trials of W workers fit on N x W CPUs.
    tcfg = run_cfg.train
    run_cfg = replace(
        run_cfg, train=replace(tcfg, cpus_per_worker=tcfg.cpus_per_worker - TRIAL_DRIVER_CPU / tcfg.num_workers)
    )
    trials_uri = storage.join(exp_uri, TRIALS_DIR)
    resume = storage.exists(storage.join(trials_uri, trial_id))
    # Trials rank and keep their checkpoints by the sweep's objective, measured in the trial's own workers.
    ranking = Ranking(sweep["val_variance"], _scorer(sweep, data_uri), sweep.get("voicing_floor") or 0.0)
    os.environ.update(tracking or {})  # this trial's own process: fit hands them on to its workers
    try:
        fit(
            run_cfg,
            data_uri,
            trials_uri,
            trial_id,
            resume=resume,
            callbacks=[TuneReportCallback()],
            datasets=datasets,
            ranking=ranking,
        )
    except NothingToTrain:
        return  # a resumed sweep restarted a trial whose training had finished: its results are in


def _scorer(sweep: Mapping[str, Any], data_uri: str) -> Scorer | None:
    """What measures the terms the sweep's objective adds to reconstruction (digit accuracy by its
    recogniser, and its ``settings.objective``); None when it adds none."""
    settings = sweep_settings(sweep)
    if not sweep.get("recogniser") and not settings.objective:
        return None
    from vae.evaluation.evaluators.samples import SampleScorer

    return SampleScorer(sweep.get("recogniser"), settings.n_per_digit, settings.objective, data_uri)


@dataclass
class SweepResult:
    experiment: str
    best_uri: str | None
    report_uri: str  # the sweep's report folder, written whether or not a trial succeeded
    best: dict = field(default_factory=dict)
    trials: int = 0


def sweep_settings(sweep: Mapping[str, Any]) -> SweepConfig:
    """The SweepConfig a ``sweep.json`` (as :func:`vae.compat.sweep` reads it) records."""
    return from_dict(SweepConfig, sweep["settings"])


def _scheduler(space: SearchSpace, epochs: int, settings: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler.get("type") == "fifo":
        return FIFOScheduler()

    def fail(key: str, msg: str) -> SpaceError:
        return SpaceError(f"{space.source}: {key}: {msg}")

    asha = asha_settings(space.scheduler, epochs, settings, fail)
    return ASHAScheduler(time_attr="epoch", **asha)


def _searcher(space: SearchSpace, max_concurrent: int, settings: SweepConfig):
    cfg = dict(space.search)
    seed = int(cfg.get("seed", settings.search_seed))
    if cfg.get("type") == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(getattr(logging, console.library_log_level("WARNING")))  # its study notices
        return OptunaSearch(seed=seed, points_to_evaluate=[dict(p) for p in space.start_with] or None)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune's max_concurrent_trials does not bound a BasicVariantGenerator passed in; it must bound itself.
    return BasicVariantGenerator(
        random_state=seed,
        max_concurrent=max_concurrent,
        points_to_evaluate=[dict(p) for p in space.start_with] or None,
    )


def run_sweep(
    space: SearchSpace,
    data_uri: str,
    storage_uri: str,
    name: str,
    settings: SweepConfig | None = None,
    *,
    resume: bool = False,
    recogniser_uri: str | None = None,
    base: RunConfig | None = None,
) -> SweepResult:
    """Run (or with ``resume`` continue) a sweep, then publish ``best/`` and the report. Ray must be up.

    ``settings`` (default: SweepConfig()) are recorded in ``sweep.json``; a resumed sweep goes on
    with the recorded ones, except how many trials run at once (this cluster's).
    """
    from ray import tune

    settings = (settings or SweepConfig()).validate()
    exp_uri = storage.join(storage_uri, name)
    storage.check_reachable(storage_uri)
    sweep = _recorded_sweep(exp_uri, name, resume)
    if sweep is not None:
        settings = replace(sweep_settings(sweep), max_concurrent=settings.max_concurrent)
    base = base or RunConfig()
    base = replace(base, train=replace(base.train, num_workers=settings.workers_per_trial, use_gpu=settings.use_gpu))

    # Everything that can be checked is checked before the first file is written, so a sweep that
    # cannot start leaves nothing behind and its --name stays free.
    trial_train = space.run_config({}, base).train
    epochs = trial_train.epochs
    if "held_out" in settings.objective and not trial_train.held_out_speaker:
        raise UserError(
            "SweepConfig.objective has 'held_out' but the trials hold no speaker out: "
            "set train.held_out_speaker (e.g. --set train.held_out_speaker=theo)"
        )
    max_concurrent = _max_concurrent(settings)
    scheduler, searcher = _scheduler(space, epochs, settings), _searcher(space, max_concurrent, settings)
    from vae.training import load_datasets

    # Read once here: inside a trial, Ray Data would be confined to the trial's placement group.
    datasets = load_datasets(data_uri, base)
    with RunLock(exp_uri, what="sweep"):
        if sweep is None:
            sweep = _record_sweep(space, data_uri, exp_uri, recogniser_uri, base, settings)
            settings = sweep_settings(sweep)
        tune_config = tune.TuneConfig(
            metric=OBJECTIVE,
            mode="min",
            num_samples=int(settings.num_samples or space.num_samples),
            max_concurrent_trials=max_concurrent,
            scheduler=scheduler,
            search_alg=searcher,
        )
        trainable = _trainable(space, data_uri, exp_uri, sweep, datasets)
        _tuner(trainable, space, exp_uri, settings, tune_config, resume).fit()
        return finish(exp_uri)


def _record_sweep(
    space: SearchSpace, data_uri: str, exp_uri: str, recogniser_uri: str | None, base: RunConfig, settings: SweepConfig
) -> dict[str, Any]:
    """Write a new sweep's ``sweep.json`` (the run's lease held); refused if another sweep of this
    name was recorded since the name was checked."""
    sweep_file = storage.join(exp_uri, SWEEP_FILE)
    if storage.exists(sweep_file):
        raise SweepExists(f"experiment {exp_uri} was started meanwhile: pass --resume to continue it")
    sweep = {
        "space": space.source,
        "data": data_uri,
        "recogniser": recogniser_uri,
        "val_variance": data_variance(data_uri),
        "voicing_floor": _voicing_floor(data_uri) if "voicing" in settings.objective else None,
        "base": to_dict(base),
        "settings": to_dict(replace(settings, num_samples=settings.num_samples or space.num_samples)),
        "metric": OBJECTIVE,
    }
    storage.write_json(sweep_file, sweep)
    return sweep


def _voicing_floor(data_uri: str) -> float:
    from vae.evaluation.evaluators.voice import voicing_floor

    return voicing_floor(data_uri, EvalConfig())


def _recorded_sweep(exp_uri: str, name: str, resume: bool) -> dict[str, Any] | None:
    """The ``sweep.json`` of the sweep to resume; None for a new sweep, after checking its name is free."""
    sweep_file = storage.join(exp_uri, SWEEP_FILE)
    if resume:
        if not storage.exists(sweep_file):
            raise SweepNotFound(f"nothing to resume: {sweep_file} does not exist (drop --resume to start {name})")
        return compat.sweep(storage.read_json(sweep_file))
    if storage.exists(exp_uri):
        raise SweepExists(
            f"experiment {exp_uri} already exists: pass --resume to continue it, or choose another --name"
        )
    return None


def _trainable(space: SearchSpace, data_uri: str, exp_uri: str, sweep: dict[str, Any], datasets: dict[str, Any]):
    """:func:`_trial` with everything but its sampled parameters bound, and the resources of its driver."""
    from ray import tune

    from vae.tracking import mlflow_settings

    trainable = tune.with_parameters(
        _trial,
        space=space,
        base=sweep["base"],
        data_uri=data_uri,
        exp_uri=exp_uri,
        sweep=sweep,
        datasets=datasets,
        tracking=mlflow_settings(),
    )
    # The trial function only drives a Train run and the Train workers hold the CPUs/GPUs;
    # Tune refuses an empty request, so the driver asks for a token share of a CPU.
    return tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPU})


def _max_concurrent(settings: SweepConfig) -> int:
    """Trials at once: the settings', or as many as this cluster's CPUs (GPUs) hold trials of their workers."""
    import ray

    if settings.max_concurrent is not None:
        return settings.max_concurrent
    available = ray.cluster_resources().get("GPU" if settings.use_gpu else "CPU", 1)
    return max(1, int(available // settings.workers_per_trial))


def _tuner(trainable, space: SearchSpace, exp_uri: str, settings: SweepConfig, tune_config, resume: bool):
    """The Tuner of the experiment at ``exp_uri``: Tune's own state restored when resuming (unfinished
    and errored trials go on), otherwise a new one writing that state under ``TUNE_DIR``."""
    from ray import tune

    loc = storage.resolve(exp_uri)
    fs = loc.fs if storage.is_s3(loc.uri) else None
    tune_path = storage.resolve(storage.join(exp_uri, TUNE_DIR)).path
    if resume and tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        return tune.Tuner.restore(
            tune_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=loc.path,
        storage_filesystem=fs,
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        verbose=1 if console.is_verbose() else 0,  # Tune's status tables with --verbose only
    )
    return tune.Tuner(trainable, param_space=space.tune_param_space(), tune_config=tune_config, run_config=run_config)


def finish(exp_uri: str) -> SweepResult:
    """Publish the best checkpoint (with samples) and build the report, from storage alone."""
    from vae.reports.sweep import build_sweep_report

    trials = load_trials(exp_uri)
    best = best_epoch(trials)
    best_uri = None
    if best is not None:
        best_uri = publish_best(exp_uri, best)
    report_uri = build_sweep_report(exp_uri, trials, best)
    return SweepResult(exp_uri, best_uri, report_uri, best or {}, len(trials))


# --------------------------------------------------------------------------- reading an experiment back


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    params: dict
    history: list[dict]
    error: str | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def epochs(self) -> int:
        return int(self.last.get("epoch", 0))

    def best_row(self) -> dict | None:
        """The epoch with the lowest objective, of those that wrote a checkpoint where any did: the
        scorer measures checkpoints, and a run keeps only those."""
        rows = [r for r in self.history if _finite(r.get(OBJECTIVE))]
        rows = [r for r in rows if r.get("checkpoint_path")] or rows
        return min(rows, key=lambda r: r[OBJECTIVE]) if rows else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def load_trials(exp_uri: str) -> list[TrialRecord]:
    """Every trial of an experiment, read back from its storage alone through Ray Tune's public
    ``ExperimentAnalysis`` (works for any past sweep, local or on S3)."""
    from ray.tune import ExperimentAnalysis

    tune_uri = storage.join(exp_uri, TUNE_DIR)
    if not storage.exists(tune_uri):
        raise SweepNotFound(f"{exp_uri} is not a sweep: {tune_uri} does not exist")
    loc = storage.resolve(tune_uri)
    try:
        analysis = ExperimentAnalysis(loc.path, storage_filesystem=loc.fs)
    except ValueError as exc:
        raise SweepNotFound(f"{exp_uri}: Ray Tune saved no experiment state in {tune_uri} yet ({exc})") from None
    records = []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id)
        rows = [] if frame is None else frame.to_dict("records")
        history = [_result_row(row) for row in rows]
        failure = trial.get_error()
        error = (str(failure).strip().splitlines() or [type(failure).__name__])[-1] if failure else None
        params = compat.trial_params(trial.config)
        records.append(TrialRecord(trial.trial_id, trial.status, params, _dedupe_epochs(history), error))
    return sorted(records, key=lambda r: (r.best_row() or {}).get(OBJECTIVE, math.inf))


def _result_row(row: dict[str, Any]) -> dict[str, Any]:
    """One reported result as a plain dict: without the trial's config columns, and without the
    gaps (NaN) a table leaves where an epoch did not report a metric (e.g. digit accuracy)."""
    return {
        key: value.item() if isinstance(value, np.generic) else value
        for key, value in row.items()
        if not key.startswith("config/") and not (isinstance(value, float) and math.isnan(value))
    }


def _dedupe_epochs(history: list[dict]) -> list[dict]:
    """A resumed trial may report an epoch again; keep the latest report of each epoch."""
    by_epoch: dict[int, dict] = {}
    for row in history:
        by_epoch[int(row.get("epoch", len(by_epoch) + 1))] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_epoch(trials: list[TrialRecord]) -> dict | None:
    """The best (trial, epoch) whose checkpoint still exists."""
    candidates = []
    for t in trials:
        for row in t.history:
            ckpt = row.get("checkpoint_path")
            if _finite(row.get(OBJECTIVE)) and ckpt:
                candidates.append((row[OBJECTIVE], t, row))
    for _, t, row in sorted(candidates, key=lambda c: c[0]):
        uri = storage.ray_uri(row["checkpoint_path"])
        if storage.exists(uri):
            return {"trial_id": t.trial_id, "params": t.params, "checkpoint": uri, "metrics": row}
    return None


def publish_best(exp_uri: str, best: dict, n_samples: int = 2) -> str:
    """Copy the best checkpoint plus a few WAV samples per digit to ``best/``, all-or-nothing."""
    from vae import checkpoint
    from vae.evaluation.context import Context
    from vae.features import write_wav

    with tempfile.TemporaryDirectory(prefix="fsdd-vae-best-") as tmp:
        storage.copy_tree(best["checkpoint"], tmp)
        loaded = checkpoint.load(tmp)
        cfg = loaded.run_config.features
        samples = os.path.join(tmp, "samples")
        os.makedirs(samples)
        ctx = Context(loaded, None, EvalConfig(n_per_digit=n_samples).validate())
        for j, (d, y) in enumerate(zip(ctx.generated_digits, ctx.generated)):
            write_wav(os.path.join(samples, f"{d}_{j % n_samples}.wav"), y, cfg)
        with open(os.path.join(tmp, "sweep_best.json"), "w") as f:
            json.dump({k: best[k] for k in ("trial_id", "params", "checkpoint", "metrics")}, f, indent=2, default=str)
        return storage.publish(tmp, storage.join(exp_uri, BEST_DIR))
