"""Score a trained VAE on the audio it makes, against the floors the vocoder allows, and report it.

:func:`evaluate_run` is the one entry point (``jobs.evaluate`` wraps it; training
and sweeps call it directly). It returns a flat dict of numbers:

- ``recon_lsd_db``, ``recon_mse``: test clips vs the WAV of their reconstruction;
  ``recon_mse_decoder``: the same MSE on the raw decoder output, as training reports it;
- with a recogniser: ``digit_accuracy`` (digit-conditional samples), ``inception_score``
  and ``frechet_distance`` (unconditional samples vs the real test clips);
- ``<metric>_floor``: the same metric for the real test clips passed through the
  features and Griffin-Lim alone (no model): the best any model can score here;
- ``digit_accuracy_real``, ``inception_score_real``: the untouched test clips;
- ``recon_lsd_db_wavs`` (+ floor), when a folder of other WAVs (unseen voices) is given;
- ``component_purity`` for a prior with components (mixture, tied): share of test clips whose component's
  majority digit is their own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vae import storage
from vae.config import ConfigError, EvalConfig, RunConfig, to_dict
from vae.evaluation import audio, metrics as M

N_DIGITS = 10
METRICS_FILE = "metrics.json"
# name -> (higher is better, what it measures); the report's metric table follows this order.
METRICS: dict[str, tuple[bool, str]] = {
    "digit_accuracy": (True, "digit-conditional samples heard as the digit asked for"),
    "inception_score": (True, "exp E KL(p(y|x) || p(y)) over unconditional samples; 10 = confident and balanced"),
    "frechet_distance": (False, "recogniser embeddings of unconditional samples vs real test clips"),
    "recon_lsd_db": (False, "log-spectral distance (dB), test clip vs its reconstruction"),
    "recon_mse": (False, "MSE of normalised spectrograms, test clip vs its reconstruction (as heard)"),
    "recon_mse_decoder": (False, "MSE of the raw decoder output, as training reports it (no vocoder)"),
    "recon_lsd_db_wavs": (False, "log-spectral distance (dB) on the extra WAV folder (unseen voices)"),
    "recon_mse_wavs": (False, "spectrogram MSE on the extra WAV folder (unseen voices)"),
    "component_purity": (True, "test clips whose mixture component's majority digit is their own"),
}


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
    out_uri: str | None = None,
    classifier_uri: str | None = None,
    n_per_digit: int | None = None,
    config: EvalConfig | None = None,
    wavs_uri: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Score ``loaded`` (a :class:`vae.checkpoint.LoadedModel`) on the ``test`` split of ``data_uri``.

    With ``classifier_uri`` (a recogniser checkpoint) the sample metrics are computed
    too; with ``out_uri`` (folder or s3://) ``metrics.json`` and the HTML report are
    written there, metrics first so a failing plot loses no number. ``n_per_digit``, when given,
    overrides ``config.n_per_digit``; otherwise the config's (default: :class:`EvalConfig`'s) holds.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    if n_per_digit is not None:
        config = replace(config, n_per_digit=n_per_digit).validate()
    ev = evaluate(loaded, data_uri, classifier_uri, config, wavs_uri, workers)
    ev.metrics["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    if out_uri is not None:
        write(ev, out_uri)
    return dict(ev.metrics)


def evaluate(
    loaded,
    data_uri: str,
    classifier_uri: str | None = None,
    config: EvalConfig = EvalConfig(),
    wavs_uri: str | None = None,
    workers: int | None = None,
) -> Evaluation:
    """All the numbers and clips of an evaluation, without writing anything."""
    from vae import generation
    from vae.dataset import load_split_numpy, read_feature_config

    config.validate()
    feats = loaded.run_config.features
    data_feats = read_feature_config(data_uri)
    if data_feats != feats:
        raise ConfigError(
            f"the features of {data_uri} differ from those checkpoint {loaded.uri} was trained on: "
            + "; ".join(f"{k}: data {v!r}, checkpoint {to_dict(feats)[k]!r}" for k, v in to_dict(data_feats).items() if to_dict(feats)[k] != v)
        )
    if wavs_uri and not storage.exists(wavs_uri):  # fail before the long work, not after it
        raise storage.StorageError(f"--wavs folder {wavs_uri} does not exist")
    rec = None
    if classifier_uri:
        from vae.evaluation import recogniser

        rec = recogniser.load(classifier_uri)
    _log(f"evaluating {loaded.uri} on the test split of {data_uri}")
    test = load_split_numpy(data_uri, "test", columns=["id", "digit", "spectrogram", "source", "db_min", "db_max"])
    if len(test["id"]) < 2:
        raise ValueError(f"{data_uri}: the test split has {len(test['id'])} clips; at least 2 are needed")
    per_clip = feats.normalisation == "per_clip"
    ranges = (test["db_min"], test["db_max"]) if per_clip else (None, None)
    specs, digits = test["spectrogram"], test["digit"].astype(np.int64)

    originals = read_originals(test["source"], feats, test["id"])
    latents = generation.encode(loaded, specs, digits)
    recon_specs = generation.decode(loaded, latents, digits)
    # audio.resynthesise(..., seed=s) gives clip i the Griffin-Lim seed s + i, exactly as
    # generation.to_waveforms does, in parallel processes.
    reconstructions = audio.resynthesise(recon_specs, feats, *ranges, workers=workers, label="reconstructions, griffin-lim")
    floor = audio.resynthesise(specs, feats, *ranges, workers=workers, label="vocoder floor, griffin-lim")

    m: dict[str, Any] = {
        "test_clips": int(len(digits)),
        # Where every generated latent came from (vae.generation): "expost" or "prior".
        "sampler": generation.sampler(loaded),
        "recon_lsd_db": M.recon_lsd_db(originals, reconstructions, feats),
        "recon_lsd_db_floor": M.recon_lsd_db(originals, floor, feats),
        "recon_mse": M.recon_mse(originals, reconstructions, feats),
        "recon_mse_floor": M.recon_mse(originals, floor, feats),
        "recon_mse_decoder": float(np.mean((recon_specs.astype(np.float64) - specs) ** 2)),
    }

    gen_digits = np.repeat(np.arange(N_DIGITS), config.n_per_digit)
    generated = _sample_waves(loaded, [(d, config.n_per_digit) for d in range(N_DIGITS)], config.seed + 1, workers)
    gen_heard = None
    notes: list[str] = []
    if rec is not None:
        real = rec.listen(originals, feats.sample_rate)
        floor_heard = rec.listen(floor, feats.sample_rate)
        cond = rec.listen(generated, feats.sample_rate)
        gen_heard = cond.predicted
        uncond = rec.listen(_sample_waves(loaded, [(None, config.n_unconditional)], config.seed, workers), feats.sample_rate)
        # The floor's sample-size matches the model's: the Frechet distance is biased upwards for small sets.
        subset = np.random.default_rng(config.seed).permutation(len(digits))[: config.n_unconditional]
        m.update(
            digit_accuracy=M.digit_accuracy(cond.probs, gen_digits),
            digit_accuracy_floor=M.digit_accuracy(floor_heard.probs, digits),
            digit_accuracy_real=M.digit_accuracy(real.probs, digits),
            inception_score=M.inception_score(uncond.probs),
            inception_score_floor=M.inception_score(floor_heard.probs[subset]),
            inception_score_real=M.inception_score(real.probs[subset]),
            frechet_distance=M.frechet_distance(uncond.embeddings, real.embeddings),
            frechet_distance_floor=M.frechet_distance(floor_heard.embeddings[subset], real.embeddings),
            digit_accuracy_per_digit={str(d): float(np.mean(cond.predicted[gen_digits == d] == d)) for d in range(N_DIGITS)},
            unconditional_samples=int(len(uncond.probs)),
            conditional_samples=int(len(gen_digits)),
        )
    else:
        notes.append("no recogniser given (--classifier): digit_accuracy, inception_score and frechet_distance not computed")

    components = loaded.model.prior.assign(latents)  # None for a prior without components
    if components is not None:
        m["component_purity"] = component_purity(components, digits, loaded.model.prior.components)

    if wavs_uri:
        m.update(_unseen_voices(loaded, wavs_uri, workers, notes))

    return Evaluation(
        checkpoint=loaded.uri,
        data=storage.resolve(data_uri).uri,
        classifier=storage.resolve(classifier_uri).uri if classifier_uri else None,
        run_config=loaded.run_config,
        config=config,
        metrics=m,
        test_ids=test["id"],
        test_digits=digits,
        test_specs=specs,
        originals=originals,
        reconstructions=reconstructions,
        generated=generated,
        generated_digits=gen_digits,
        generated_heard=gen_heard,
        latents=latents,
        components=components,
        epoch=int(loaded.epoch),
        history=run_history(loaded),
        notes=notes,
    )


def write(ev: Evaluation, out_uri: str) -> str:
    """``metrics.json`` first, then the report (built locally, copied when ``out_uri`` is s3://)."""
    from vae.reports.run_report import write_run_report

    doc = metrics_document(ev)
    storage.write_json(storage.join(out_uri, METRICS_FILE), doc)
    if storage.is_s3(out_uri):
        with tempfile.TemporaryDirectory(prefix="fsdd-vae-eval-") as tmp:
            write_run_report(ev, tmp)
            storage.copy_tree(tmp, out_uri)
    else:
        write_run_report(ev, storage.resolve(out_uri).path)
    return storage.resolve(out_uri).uri


def metrics_document(ev: Evaluation) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- pieces


def check_source(source: str, clip_id: str) -> None:
    """Raise ValueError unless ``source`` can be the recording of clip ``clip_id``: a local path or s3://
    URI without ``..``, named ``<clip_id>.wav`` (a dataset's ``source`` is read, so it may not point anywhere)."""
    from vae.dataset import parse_name

    try:
        uri = storage.resolve(source).uri
        named = parse_name(source).id
    except (storage.StorageError, ValueError) as exc:
        raise ValueError(f"clip {clip_id!r}: its source {source!r} cannot be its recording: {exc}") from None
    if named != clip_id or (not storage.is_s3(uri) and uri != source):
        raise ValueError(f"clip {clip_id!r}: its source {source!r} is not <id>.wav at a plain path; the dataset is not one jobs.preprocess wrote")


def read_originals(sources, feats, ids=None) -> np.ndarray:
    """The source WAVs of the test clips at the features' sample rate, trimmed/padded to ``clip_seconds``.
    With ``ids``, each source is first checked to be its clip's recording (:func:`check_source`)."""
    from vae.features import AudioError, decode_audio, fit_length

    out = np.zeros((len(sources), feats.n_samples), np.float32)
    for i, src in enumerate(sources):
        if ids is not None:
            check_source(str(src), str(ids[i]))
        try:
            out[i] = fit_length(decode_audio(storage.read_bytes(str(src)), feats).waveform, feats)
        except AudioError as exc:
            raise AudioError(f"{src}: {exc.reason}") from exc
    return out


def _sample_waves(loaded, requests: list[tuple[int | None, int]], seed: int, workers: int | None) -> np.ndarray:
    """WAVs of ``n`` samples per ``(digit or None for the prior, n)``, in order, through one Griffin-Lim pool."""
    from vae import generation

    specs, lo, hi = [], [], []
    for i, (digit, n) in enumerate(requests):
        specs.append(generation.sample(loaded, n, digit=digit, seed=seed + 1000 * i))
        a, b = generation.db_range(loaded, digit)
        lo.append(np.full(n, np.nan if a is None else a)), hi.append(np.full(n, np.nan if b is None else b))
    lo, hi = np.concatenate(lo), np.concatenate(hi)
    ranges = (None, None) if np.isnan(lo).any() else (lo, hi)
    what = "unconditional samples" if requests[0][0] is None else "digit-conditional samples"
    return audio.resynthesise(np.concatenate(specs), loaded.run_config.features, *ranges, workers=workers, seed=seed, label=f"{what}, griffin-lim")


def component_purity(components: np.ndarray, digits: np.ndarray, k: int) -> float:
    table = component_table(components, digits, k)
    return float(table.max(axis=0).sum() / max(table.sum(), 1))


def component_table(components: np.ndarray, digits: np.ndarray, k: int) -> np.ndarray:
    """Counts ``[digit, component]``."""
    table = np.zeros((N_DIGITS, k), np.int64)
    np.add.at(table, (np.asarray(digits, np.int64), np.asarray(components, np.int64)), 1)
    return table


def _unseen_voices(loaded, wavs_uri: str, workers: int | None, notes: list[str]) -> dict[str, Any]:
    """Reconstruction quality on every WAV under ``wavs_uri`` (undecodable files are skipped and noted;
    a conditional model also skips files whose name does not give the digit)."""
    from vae import generation
    from vae.dataset import parse_name
    from vae.features import AudioError, decode_audio, fit_length, waveform_to_spectrogram

    feats = loaded.run_config.features
    files = storage.list_files(wavs_uri, suffix=".wav")
    waves, specs, lo, hi, digits = [], [], [], [], []
    for uri in files:
        try:
            digit = parse_name(uri).digit if loaded.run_config.model.conditional else None
            y = fit_length(decode_audio(storage.read_bytes(uri), feats).waveform, feats)
            s, a, b = waveform_to_spectrogram(y, feats)
        except AudioError as exc:
            notes.append(f"{uri} skipped: {exc.reason}")
            continue
        except ValueError as exc:  # parse_name: the file name does not give the digit
            notes.append(f"{uri} skipped: a conditional model needs the digit: {exc}")
            continue
        waves.append(y), specs.append(s), lo.append(a), hi.append(b), digits.append(digit)
    if not waves:
        raise ValueError(f"no usable .wav file under {wavs_uri} ({len(files)} found)")
    waves, specs = np.stack(waves), np.stack(specs)
    ranges = (np.array(lo), np.array(hi)) if feats.normalisation == "per_clip" else (None, None)
    digits = np.asarray(digits) if loaded.run_config.model.conditional else None
    recon = audio.resynthesise(generation.reconstruct(loaded, specs, digits), feats, *ranges, workers=workers, label="unseen voices, griffin-lim")
    floor = audio.resynthesise(specs, feats, *ranges, workers=workers, label="unseen voices floor, griffin-lim")
    return {
        "wavs": storage.resolve(wavs_uri).uri,
        "wavs_clips": int(len(waves)),
        "recon_lsd_db_wavs": M.recon_lsd_db(waves, recon, feats),
        "recon_lsd_db_wavs_floor": M.recon_lsd_db(waves, floor, feats),
        "recon_mse_wavs": M.recon_mse(waves, recon, feats),
        "recon_mse_wavs_floor": M.recon_mse(waves, floor, feats),
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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
