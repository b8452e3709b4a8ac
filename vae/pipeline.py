"""The whole path in one call: features -> recogniser -> train or sweep -> evaluation -> report.

Layout under ``<storage>``::

    features/<preset>-<fingerprint>/     Parquet (shared by every experiment on the same input + features)
    recogniser/<preset>-<fingerprint>/   the digit recogniser for those features
    <EXP>/train/                         a single training run (train-only mode)
    <EXP>/{tune,trials,best,report}/     a sweep (see vae.tuning)
    <EXP>/evaluation/                    metrics.json + index.html of the final model

A stage whose output is already complete is skipped: extraction when a dataset
of the same input files (names and sizes) and FeatureConfig is published, the
recogniser when one exists for those features.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from vae import console, storage, tracking
from vae.config import ConfigError, EvalConfig, FeatureConfig, RecogniserConfig, RunConfig, SweepConfig, to_json
from vae.errors import UserError
from vae.objective import SCORE_METRIC, Ranking

log = logging.getLogger(__name__)


class PipelineError(UserError, RuntimeError):
    """A stage produced nothing the next one can use (no clip extracted, no usable sweep checkpoint)."""


def evaluate_best(
    run_dir: str,
    best: str,
    data_uri: str,
    out: str,
    classifier_uri: str | None = None,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Score a training run's best checkpoint on audio into ``out`` (its report included) and record
    the numbers beside the training metrics: in the checkpoint's metrics.json, in ``RUN/metrics.json``
    (so runs and sweep trials compare on them) and in the run's trackers. ``jobs.train`` and the
    pipeline's train stage both end here."""
    from vae import checkpoint
    from vae.reports.run_report import evaluate_and_report

    loaded = checkpoint.load(best)
    metrics = evaluate_and_report(loaded, data_uri, out, classifier_uri=classifier_uri, config=config)
    merged = {**loaded.metrics, **metrics}
    checkpoint.write_json(best, checkpoint.METRICS, merged)
    storage.write_json(storage.join(run_dir, checkpoint.METRICS), {"best_checkpoint": best, **merged})
    tracking.log_report(run_dir, [out], metrics, loaded.epoch)
    return metrics


def input_fingerprint(src: str, cfg: FeatureConfig) -> str:
    """Hash of the input listing (relative names and sizes) and the feature config."""
    import pyarrow.fs as pafs

    loc = storage.resolve(src)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    h = hashlib.sha256(to_json(cfg).encode())
    for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
        h.update(f"{info.path[len(loc.path) :]}\0{info.size}\n".encode())
    return h.hexdigest()[:12]


def extract_features(src: str, storage_uri: str, preset_name: str, cfg: FeatureConfig) -> str:
    """The dataset of ``src`` with ``cfg`` under ``storage_uri/features/``: reused when one with at
    least one clip is published there already (same input files and features), extracted otherwise."""
    from vae.dataset import extract, published_dataset

    out = storage.join(storage_uri, "features", f"{preset_name}-{input_fingerprint(src, cfg)}")
    try:
        _, _, done = published_dataset(out)
    except storage.StorageError as exc:
        if storage.exists(out):
            log.info(f"features: nothing to reuse at {out} ({exc}); extracting again")
    else:
        log.info(
            f"features: reusing {out} ({done['written']} clips, {done['rejected']} rejected): same input and features"
        )
        return out
    log.info(f"features: extracting {src} -> {out}")
    progress = console.ProgressLine()
    try:
        summary = extract(src, out, cfg, progress=progress)
    finally:
        progress.close()
    log.info(f"features: {summary.written} clips written, {summary.rejected} rejected")
    if summary.written == 0:
        raise PipelineError(f"no clip of {src} could be extracted; see {summary.rejected_output}")
    return out


def ensure_recogniser(features_uri: str, storage_uri: str, config: RecogniserConfig) -> str:
    from vae.evaluation import recogniser

    out = storage.join(storage_uri, "recogniser", features_uri.rstrip("/").rsplit("/", 1)[-1])
    if storage.exists(storage.join(out, recogniser.WEIGHTS_FILE)):
        acc = storage.read_json(storage.join(out, recogniser.METRICS_FILE)).get("test_accuracy")
        log.info(f"recogniser: reusing {out} (test accuracy {acc})")
        return out
    log.info(f"recogniser: training on {features_uri}")
    rec = recogniser.train_from_parquet(features_uri, config)
    recogniser.save(rec, out)
    log.info(
        f"recogniser: test accuracy {rec.metrics.get('test_accuracy'):.3f} "
        f"(after Griffin-Lim {rec.metrics.get('test_accuracy_griffin_lim'):.3f}) -> {out}"
    )
    return out


@dataclass
class PipelineResult:
    features: str
    recogniser: str | None
    best_checkpoint: str
    evaluation: str
    report: str
    metrics: dict = field(default_factory=dict)
    sweep_report: str | None = None
    timings_s: dict = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        keys = (
            "digit_accuracy",
            "digit_accuracy_se",
            "digit_accuracy_floor",
            "inception_score",
            "inception_score_floor",
            "frechet_distance",
            "frechet_distance_floor",
            "recon_lsd_db",
            "recon_lsd_db_floor",
            "recon_mse",
            "voicing_samples",
            "voicing_recon",
            "voicing_real",
            "voicing_floor",
            "pesq_nb",
            "pesq_nb_floor",
            "held_out_speaker",
            "held_out_lsd_db",
            "held_out_lsd_db_floor",
            "held_out_pesq_nb",
            "held_out_pesq_nb_floor",
            "held_out_voicing",
            "held_out_voicing_floor",
        )
        return {
            "features": self.features,
            "recogniser": self.recogniser,
            "best_checkpoint": self.best_checkpoint,
            "report": self.report,
            "sweep_report": self.sweep_report,
            "metrics": {k: self.metrics.get(k) for k in keys if k in self.metrics},
            "timings_s": self.timings_s,
        }


def run_pipeline(
    src: str,
    storage_uri: str,
    name: str,
    *,
    features_preset: str = "default",
    space=None,
    run_cfg: RunConfig | None = None,
    sweep: SweepConfig | None = None,
    with_recogniser: bool = True,
    resume: bool = False,
    n_per_digit: int = EvalConfig.n_per_digit,
) -> PipelineResult:
    """Run every stage; ``space`` (a SearchSpace) sweeps with ``sweep``'s settings, otherwise
    ``run_cfg`` is trained once."""
    from vae.config import preset

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 1)
        clock = now

    storage.check_reachable(storage_uri)
    exp_uri = storage.join(storage_uri, name)
    cfg = preset(FeatureConfig, features_preset)
    features = extract_features(src, storage_uri, features_preset, cfg)
    lap("features")
    rec = ensure_recogniser(features, storage_uri, RecogniserConfig()) if with_recogniser else None
    lap("recogniser")
    sweep_reports = None
    if space is not None:
        best, sweep_reports = _sweep(space, features, storage_uri, name, sweep, resume, rec)
    else:
        best = _train(run_cfg or RunConfig(), features, exp_uri, resume, rec)
    lap("train" if space is None else "sweep")
    evaluation = storage.join(exp_uri, "evaluation")
    config = replace(EvalConfig(), n_per_digit=n_per_digit).validate()
    metrics = _evaluate(exp_uri, best, features, evaluation, rec, config, sweep_reports)
    lap("evaluate")
    return PipelineResult(
        features=features,
        recogniser=rec,
        best_checkpoint=best,
        evaluation=evaluation,
        report=storage.join(evaluation, "index.html"),
        metrics=metrics,
        sweep_report=None if sweep_reports is None else storage.join(sweep_reports, "index.html"),
        timings_s=timings,
    )


def _sweep(
    space, features: str, storage_uri: str, name: str, sweep: SweepConfig | None, resume: bool, rec: str | None
) -> tuple[str, str]:
    """Run (or resume) the sweep of ``space``: its published best checkpoint and its report folder."""
    from vae.tuning import run_sweep

    exp_uri = storage.join(storage_uri, name)
    log.info(f"sweep: {space.source} -> {exp_uri}")
    result = run_sweep(space, features, storage_uri, name, sweep, resume=resume, recogniser_uri=rec)
    if not result.best_uri:
        raise PipelineError(f"the sweep {exp_uri} produced no usable checkpoint; see {result.report_uri}")
    return storage.join(exp_uri, "best"), result.report_uri


def run_ranking(run_cfg: RunConfig, data_uri: str, recogniser_uri: str | None) -> Ranking:
    """What one run's checkpoints are ranked by (``TrainConfig.rank_by``): the validation reconstruction
    error, or with "samples" the objective whose term beside it is the digit accuracy of the checkpoint's
    samples, heard by the recogniser at ``recogniser_uri``."""
    tcfg = run_cfg.train
    if tcfg.rank_by == SCORE_METRIC:
        return Ranking()
    if not recogniser_uri:
        raise ConfigError(
            f"TrainConfig.rank_by={tcfg.rank_by!r} ranks checkpoints by what a recogniser hears in their samples: "
            "pass --recogniser, or run the pipeline (jobs.pipeline, jobs.demo), which trains one"
        )
    from vae.evaluation.evaluators.samples import SampleScorer
    from vae.tuning import data_variance

    return Ranking(data_variance(data_uri), SampleScorer(recogniser_uri, tcfg.rank_samples_per_digit))


def _train(run_cfg: RunConfig, features: str, exp_uri: str, resume: bool, rec: str | None) -> str:
    """Train ``run_cfg`` once (or go on with it) into ``exp_uri/train``: its best checkpoint, ranked as
    ``run_cfg.train.rank_by`` says (by samples, with the recogniser ``rec``)."""
    from vae import checkpoint
    from vae.training import NothingToTrain, describe, fit

    ranking = run_ranking(run_cfg, features, rec)
    log.info(f"train: {describe(run_cfg)} -> {exp_uri}/train")
    try:
        result = fit(run_cfg, features, exp_uri, "train", resume=resume, ranking=ranking)
    except NothingToTrain as exc:  # resumed after training had finished: go on to the evaluation
        best = checkpoint.best_intact(storage.join(exp_uri, "train"), ranking.metric)
        log.info(f"train: {exc}; evaluating its best checkpoint {best}")
        return best
    log.info(
        f"train: best checkpoint {result.best_checkpoint} "
        f"({ranking.metric} {result.best_metrics.get(ranking.metric):.4g})"
    )
    return result.best_checkpoint


def _evaluate(
    exp_uri: str,
    best: str,
    features: str,
    evaluation: str,
    rec: str | None,
    config: EvalConfig,
    sweep_reports: str | None,
) -> dict[str, Any]:
    """Evaluate ``best`` into ``evaluation``. A trained run's best goes through :func:`evaluate_best`; the
    published best/ of a sweep stays as published, and the sweep's tracker run gets both reports."""
    from vae import checkpoint
    from vae.reports.run_report import evaluate_and_report

    log.info(f"evaluate: {best} -> {evaluation}")
    if sweep_reports is None:
        return evaluate_best(storage.join(exp_uri, "train"), best, features, evaluation, rec, config)
    loaded = checkpoint.load(best)
    metrics = evaluate_and_report(loaded, features, evaluation, classifier_uri=rec, config=config)
    reports = [uri for uri in (evaluation, sweep_reports) if uri]
    tracking.log_report(exp_uri, reports, metrics, loaded.epoch)
    return metrics
