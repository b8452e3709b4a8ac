"""Score a trained VAE on the audio it makes, against the floors the vocoder allows.

:func:`evaluate_run` is the one entry point for numbers (training, sweeps and benchmarks
call it); :func:`vae.reports.run_report.evaluate_and_report` also writes them with the report.
It returns a flat dict of numbers, the union of what every evaluator
(:mod:`vae.evaluation.evaluators`) yields:

- ``recon_lsd_db``, ``recon_mse``: test clips vs the WAV of their reconstruction;
  ``recon_mse_decoder``: the same MSE on the raw decoder output, as training reports it;
- with a recogniser: ``digit_accuracy`` (digit-conditional samples; ``digit_accuracy_se`` its binomial standard error), ``inception_score``
  and ``frechet_distance`` (unconditional samples vs the real test clips);
- ``<metric>_floor``: the same metric for the real test clips passed through the
  features and Griffin-Lim alone (no model): the best any model can score here;
- ``digit_accuracy_real``, ``inception_score_real``: the untouched test clips; ``frechet_distance_real``: real
  recordings that are not test clips (the train split), untouched, against the test clips;
- ``voicing_recon``, ``voicing_samples`` (pYIN's voiced share of the loud frames) with ``voicing_real`` and
  ``voicing_floor``; ``pesq_nb`` (narrow-band PESQ of the reconstructions) with ``pesq_nb_floor``, each on at most
  ``EvalConfig.voicing_clips`` clips of a set;
- ``recon_lsd_db_wavs`` and ``pesq_nb_wavs`` (+ floors), when a folder of other WAVs (unseen voices) is given;
- ``component_purity`` for a prior with components (mixture, tied): share of test clips whose component's
  majority digit is their own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae import storage
from vae.config import ConfigError, EvalConfig, RunConfig, to_dict
from vae.dataset import read_feature_config
from vae.evaluation import recogniser
from vae.evaluation.context import Context
from vae.evaluation.evaluators import EVALUATORS

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclass
class Evaluation:
    """Everything the report shows, computed once. Waveforms are at the run's sample rate."""

    checkpoint: str
    data: str
    classifier: str | None
    run_config: RunConfig
    config: EvalConfig
    metrics: dict[str, Any]
    test_ids: np.ndarray
    test_digits: np.ndarray
    test_specs: np.ndarray  # the dataset's spectrograms (= features of the original WAVs)
    originals: np.ndarray  # (N, n_samples) the original test clips, trimmed to clip_seconds
    reconstructions: np.ndarray  # (N, n_samples) WAVs of the reconstructions
    generated: np.ndarray  # (10 * n_per_digit, n_samples) WAVs of digit-conditional samples
    generated_digits: np.ndarray
    generated_heard: np.ndarray | None  # the recogniser's reading of each, when there is one
    latents: np.ndarray  # (N, latent_dim) posterior means of the test clips
    components: np.ndarray | None  # mixture component of each test clip
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def features(self):
        return self.run_config.features


def evaluate_run(
    loaded,
    data_uri: str,
    classifier_uri: str | None = None,
    config: EvalConfig | None = None,
    wavs_uri: str | None = None,
) -> dict[str, Any]:
    """The metrics of ``loaded`` (a :class:`vae.checkpoint.LoadedModel`) on the ``test`` split of
    ``data_uri``, sample metrics included when ``classifier_uri`` (a recogniser checkpoint) is given.
    ``config`` (default: :class:`EvalConfig`'s) says how many samples, with which seed."""
    return dict(evaluate(loaded, data_uri, classifier_uri, config or EvalConfig(), wavs_uri).metrics)


def evaluate(
    loaded,
    data_uri: str,
    classifier_uri: str | None = None,
    config: EvalConfig = EvalConfig(),
    wavs_uri: str | None = None,
) -> Evaluation:
    """All the numbers and clips of an evaluation, without writing anything."""
    started = time.perf_counter()
    config.validate()
    _check_inputs(loaded, data_uri, wavs_uri)
    rec = recogniser.load(classifier_uri) if classifier_uri else None
    ctx = Context(loaded, data_uri, config, rec, wavs_uri)
    log.info(f"evaluating {loaded.uri} on the test split of {data_uri}")
    ctx.originals  # noqa: B018 -- reads and checks every test clip's source before the long work
    metrics: dict[str, Any] = {}
    for evaluator in EVALUATORS:
        metrics.update(evaluator.evaluate(ctx))
    evaluation = _evaluation(ctx, data_uri, metrics, classifier_uri)
    metrics["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    return evaluation


def _check_inputs(loaded, data_uri: str, wavs_uri: str | None) -> None:
    """Refuse data the checkpoint cannot be scored on, before any long work."""
    feats, data_feats = to_dict(loaded.run_config.features), to_dict(read_feature_config(data_uri))
    if data_feats != feats:
        raise ConfigError(
            f"the features of {data_uri} differ from those checkpoint {loaded.uri} was trained on: "
            + "; ".join(f"{k}: data {v!r}, checkpoint {feats[k]!r}" for k, v in data_feats.items() if feats[k] != v)
        )
    if wavs_uri and not storage.exists(wavs_uri):
        raise storage.StorageError(f"--wavs folder {wavs_uri} does not exist")


def _evaluation(ctx: Context, data_uri: str, metrics: dict[str, Any], classifier_uri: str | None) -> Evaluation:
    return Evaluation(
        checkpoint=ctx.loaded.uri,
        data=storage.resolve(data_uri).uri,
        classifier=storage.resolve(classifier_uri).uri if classifier_uri else None,
        run_config=ctx.loaded.run_config,
        config=ctx.config,
        metrics=metrics,
        test_ids=ctx.test["id"],
        test_digits=ctx.digits,
        test_specs=ctx.specs,
        originals=ctx.originals,
        reconstructions=ctx.reconstructions,
        generated=ctx.generated,
        generated_digits=ctx.generated_digits,
        generated_heard=ctx.heard("generated").predicted if ctx.recogniser else None,
        latents=ctx.latents,
        components=ctx.components,
        epoch=int(ctx.loaded.epoch),
        history=run_history(ctx.loaded),
        notes=ctx.notes,
    )


def metrics_document(ev: Evaluation) -> dict[str, Any]:
    """What ``metrics.json`` holds: every metric, and what was scored with what."""
    return {
        **ev.metrics,
        "checkpoint": ev.checkpoint,
        "epoch": ev.epoch,
        "data": ev.data,
        "classifier": ev.classifier,
        "eval_config": to_dict(ev.config),
        "features": to_dict(ev.features),
        "notes": ev.notes,
    }


def run_history(loaded) -> list[dict]:
    """Per-epoch metrics of the run the checkpoint belongs to, by epoch.

    From ``metrics["history"]`` when training stored it; otherwise from the
    checkpoint's siblings ``<run>/checkpoint_*/metrics.json`` (only the kept ones,
    so epochs may be missing). A checkpoint not named ``checkpoint_*`` (e.g. a
    published copy) has no siblings to trust and gives its own metrics only.
    """
    metrics = loaded.metrics if isinstance(loaded.metrics, dict) else {}
    stored = metrics.get("history")
    rows = [r for r in stored if isinstance(r, dict)] if isinstance(stored, list) else [metrics]
    uri = storage.resolve(loaded.uri).uri.rstrip("/")
    run_dir, name = uri.rsplit("/", 1)
    if not stored and name.startswith("checkpoint_"):
        try:
            for rel, file_uri in storage.walk_files(run_dir):
                parts = rel.split("/")
                if len(parts) == 2 and parts[0].startswith("checkpoint_") and parts[1] == METRICS_FILE:
                    rows.append(storage.read_json(file_uri))
        except storage.StorageError:
            pass  # the run folder is gone or unreadable: the checkpoint's own metrics remain
    by_epoch = {int(r["epoch"]): r for r in rows if isinstance(r.get("epoch"), (int, float))}
    return [by_epoch[e] for e in sorted(by_epoch)]
