"""A training checkpoint is a directory, local or ``s3://``:

- ``model.weights.h5``   Keras weights (encoder, decoder, prior);
- ``optimizer.npz``      optimizer variables, in ``optimizer.variables`` order;
- ``state.json``         ``{"epoch": completed epochs}``;
- ``config.json``        the RunConfig (features + model + prior + train);
- ``metrics.json``       the metrics reported with it;
- ``latent_stats.json``  per-digit latent mean/spread (and mixture occupancy) of the training encodings;
- ``expost.json``        per-digit Gaussian mixtures of the training encodings (vae.generation.fit_expost);
- ``manifest.json``      written last: name, size and SHA-256 of each file above.

A checkpoint is whole or it is not a checkpoint: loading verifies the manifest and
names the first file that is missing or differs; anything that still cannot be
loaded is one :class:`CheckpointError` naming the checkpoint and the file. A
checkpoint without a manifest is whole if it holds the files of
:data:`vae.compat.UNMANIFESTED_CHECKPOINT`. The model is rebuilt from ``config.json`` and the weights loaded
into it, so a checkpoint needs no pickled code (``optimizer.npz`` is read with
``allow_pickle=False``).

``--resume`` goes on from the newest checkpoint of the run that verifies
(:func:`newest_intact`), so a damaged latest checkpoint costs an epoch, not the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vae import compat, storage
from vae.config import ConfigError, RunConfig, from_dict, to_json
from vae.errors import UserError
from vae.objective import OBJECTIVE, SCORE_METRIC

WEIGHTS = "model.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
CONFIG = "config.json"
METRICS = "metrics.json"
LATENT_STATS = "latent_stats.json"
EXPOST = "expost.json"
MANIFEST = "manifest.json"
# The section of a digit recogniser's config.json (vae.evaluation.recogniser.save) that a checkpoint's lacks.
RECOGNISER_SECTION = "recogniser"
# Checkpoints of a run an error message lists.
MAX_LISTED = 5
# checkpoint_<epoch>, with -<k> when a resumed run would otherwise reuse the name of a damaged one.
_DIR_NAME = re.compile(r"checkpoint_(\d+)(?:-(\d+))?")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, incomplete, damaged or does not match its config; the message names it and the file."""


def _dump(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        f.write("\n")


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: str) -> dict[str, Any]:
    return {"bytes": os.path.getsize(path), "sha256": _digest(path)}


def save(
    directory: str,
    model,
    optimizer,
    epoch: int,
    run_cfg: RunConfig,
    metrics: dict,
    latent_stats: dict,
    expost: dict | None = None,
) -> str:
    """Write a complete checkpoint into a local ``directory`` (created if needed), its manifest last."""
    os.makedirs(directory, exist_ok=True)
    model.save_weights(os.path.join(directory, WEIGHTS))
    if optimizer is not None:
        np.savez(os.path.join(directory, OPTIMIZER), *[np.asarray(v.numpy()) for v in optimizer.variables])
    with open(os.path.join(directory, CONFIG), "w") as f:
        f.write(to_json(run_cfg) + "\n")
    _dump(os.path.join(directory, STATE), {"epoch": int(epoch)})
    _dump(os.path.join(directory, METRICS), metrics)
    _dump(os.path.join(directory, LATENT_STATS), latent_stats)
    if expost is not None:
        _dump(os.path.join(directory, EXPOST), expost)
    names = [
        n
        for n in (WEIGHTS, OPTIMIZER, CONFIG, STATE, METRICS, LATENT_STATS, EXPOST)
        if os.path.exists(os.path.join(directory, n))
    ]
    _dump(
        os.path.join(directory, MANIFEST),
        {"format": 1, "files": {n: _entry(os.path.join(directory, n)) for n in names}},
    )
    return directory


def write_json(uri: str, name: str, obj: Any) -> None:
    """Replace the JSON file ``name`` (e.g. ``metrics.json``) of the checkpoint ``uri`` (local or s3://)
    so that a failure at any point leaves a whole checkpoint, with the old content or the new.

    Three single-object writes: the manifest accepts the new content beside the old (``pending``),
    the file is replaced, the manifest keeps only the new entry."""
    with tempfile.TemporaryDirectory(prefix="fsdd-vae-ckpt-json-") as tmp:
        path = os.path.join(tmp, name)
        _dump(path, obj)
        manifest_uri = storage.join(uri, MANIFEST)
        manifest = storage.read_json(manifest_uri) if storage.exists(manifest_uri) else None
        entry = _entry(path)
        if manifest is not None and name in manifest["files"]:
            manifest["files"][name] = {**manifest["files"][name], "pending": entry}
            storage.write_json(manifest_uri, manifest)
        with open(path, "rb") as f:
            storage.write_bytes(storage.join(uri, name), f.read())
        if manifest is not None:
            manifest["files"][name] = entry
            storage.write_json(manifest_uri, manifest)


def _matches(path: str, size: int, sha: str) -> bool:
    return os.path.getsize(path) == size and _digest(path) == sha


def problem(directory: str) -> str | None:
    """Why the local checkpoint ``directory`` is not whole (naming the first bad file), or None.

    With a manifest: every file it lists must exist with its size and SHA-256 (or those of its
    ``pending`` rewrite).
    Without one: every file of :data:`vae.compat.UNMANIFESTED_CHECKPOINT` must exist.
    """
    manifest_path = os.path.join(directory, MANIFEST)
    if not os.path.exists(manifest_path):
        missing = compat.unmanifested_checkpoint_missing(lambda name: os.path.exists(os.path.join(directory, name)))
        return f"{MANIFEST} and {', '.join(missing)} missing: not a complete checkpoint" if missing else None
    try:
        with open(manifest_path) as f:
            files = json.load(f)["files"]
        entries = [(str(name), int(e["bytes"]), str(e["sha256"]), e.get("pending")) for name, e in files.items()]
        pending = {name: (int(p["bytes"]), str(p["sha256"])) for name, _, _, p in entries if p is not None}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{MANIFEST} is not a valid manifest ({type(exc).__name__}: {exc})"
    for name in (WEIGHTS, CONFIG):
        if name not in files:
            return f"{MANIFEST} does not list {name}"
    for name, size, sha, _ in entries:
        path = os.path.join(directory, storage.safe_name(name))
        if not os.path.isfile(path):
            return f"{name} is missing"
        if name in pending and _matches(path, *pending[name]):  # a rewrite (write_json) that stopped midway
            continue
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, its manifest says {size}"
        if _digest(path) != sha:
            return f"{name} differs from its manifest (SHA-256)"
    return None


def verify(directory: str, uri: str | None = None) -> None:
    """Raise :class:`CheckpointError` naming the checkpoint and the first bad file unless it is whole."""
    why = problem(directory)
    if why:
        raise CheckpointError(f"checkpoint {uri or directory} is damaged or incomplete: {why}")


def _read_json(directory: str, name: str, uri: str | None, default: Any = None) -> Any:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        if default is not None:
            return default
        raise CheckpointError(f"checkpoint {uri or directory}: {name} is missing")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {uri or directory}: {name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):  # every file of a checkpoint holds one JSON object
        raise CheckpointError(f"checkpoint {uri or directory}: {name} holds a {type(data).__name__}, not a JSON object")
    return data


def _epoch(directory: str, uri: str | None) -> int:
    state = _read_json(directory, STATE, uri)
    try:
        return int(state["epoch"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {uri or directory}: {STATE} holds no epoch: {state!r}") from None


def _load_weights(model, directory: str, uri: str | None) -> None:
    try:
        model.load_weights(os.path.join(directory, WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many types for a bad file
        raise CheckpointError(
            f"checkpoint {uri or directory}: {WEIGHTS} cannot be loaded into the model of its {CONFIG}: {type(exc).__name__}: {exc}"
        ) from None


def restore_training_state(directory: str, model, optimizer) -> int:
    """Load weights and optimizer state from a local checkpoint into built objects; return its epoch."""
    verify(directory)
    epoch = _epoch(directory, None)
    _load_weights(model, directory, None)
    opt_path = os.path.join(directory, OPTIMIZER)
    if optimizer is not None and os.path.exists(opt_path):
        try:
            with np.load(opt_path, allow_pickle=False) as saved:
                values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {directory}: {OPTIMIZER} cannot be read: {exc}") from None
        if len(values) != len(optimizer.variables):
            raise CheckpointError(
                f"{opt_path}: holds {len(values)} optimizer variables, the optimizer has {len(optimizer.variables)}"
            )
        for var, value in zip(optimizer.variables, values):
            var.assign(value)
    return epoch


def read_metrics(directory: str) -> dict:
    return _read_json(directory, METRICS, None, default={})


# --------------------------------------------------------------------------- resuming


def dir_name(run_dir: str, epoch: int) -> str:
    """The folder name for a new checkpoint of ``epoch`` in ``run_dir``: ``checkpoint_<epoch>``, or with
    ``-<k>`` when that folder exists (a damaged checkpoint a resumed run went back past)."""
    name, k = f"checkpoint_{epoch:04d}", 0
    while storage.exists(storage.join(run_dir, name)):
        k += 1
        name = f"checkpoint_{epoch:04d}-{k}"
    return name


def _folders(uri: str) -> list[str]:
    """Names of the folders directly under ``uri`` (none when it does not exist)."""
    import pyarrow.fs as pafs

    loc = storage.resolve(uri)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    except OSError as exc:
        raise storage.StorageError(f"cannot list {loc.uri}: {exc}") from exc
    return [i.base_name for i in infos if i.type == pafs.FileType.Directory]


def _checkpoint_dirs(run_dir: str) -> list[str]:
    """Names of the ``checkpoint_*`` folders of a run, newest epoch first."""
    found = [(m, name) for name in _folders(run_dir) if (m := _DIR_NAME.fullmatch(name))]
    return [name for _, name in sorted(found, key=lambda mn: (-int(mn[0].group(1)), -int(mn[0].group(2) or 0)))]


def run_checkpoints(run_dir: str) -> list[tuple[str, dict]]:
    """Every checkpoint a run has kept, oldest epoch first, with the metrics it was written with."""
    names = reversed(_checkpoint_dirs(run_dir))
    return [(uri, storage.read_json(storage.join(uri, METRICS))) for uri in (storage.join(run_dir, n) for n in names)]


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local directory holding the checkpoint ``uri`` (itself when local, a temporary copy from s3://)."""
    if not storage.is_s3(uri):
        yield storage.resolve(uri).path
        return
    with tempfile.TemporaryDirectory(prefix="fsdd-vae-ckpt-") as tmp:
        storage.copy_tree(uri, tmp)
        yield tmp


@dataclass
class ResumePoint:
    uri: str
    epoch: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (newer checkpoint, why it was passed over)


def newest_intact(run_dir: str) -> ResumePoint | None:
    """The newest checkpoint of the run at ``run_dir`` that verifies, with the newer ones passed over and why.

    None when the run has no checkpoint folder at all; :class:`CheckpointError` saying
    what to do when it has some and none is intact.
    """
    skipped: list[tuple[str, str]] = []
    for name in _checkpoint_dirs(run_dir):
        uri = storage.join(run_dir, name)
        with local_copy(uri) as directory:
            why = problem(directory)
            if why is None:
                try:
                    return ResumePoint(uri, _epoch(directory, uri), skipped)
                except CheckpointError as exc:
                    why = str(exc)
        skipped.append((name, why))
    if not skipped:
        return None
    raise CheckpointError(
        f"no intact checkpoint in {storage.resolve(run_dir).uri} ("
        + "; ".join(f"{name}: {why}" for name, why in skipped)
        + f"): its training cannot be continued; start afresh under another --name, or delete {storage.resolve(run_dir).uri} first"
    )


def remove_damaged(run_dir: str) -> list[str]:
    """Delete the checkpoint folders of ``run_dir`` that fail verification (left by a killed writer,
    or damaged since); returns their names. Only for a run no one else writes (its lease held)."""
    removed = []
    for name in _checkpoint_dirs(run_dir):
        uri = storage.join(run_dir, name)
        with local_copy(uri) as directory:
            damaged = problem(directory) is not None
        if damaged:
            storage.delete_tree(uri)
            removed.append(name)
    return removed


def best_intact(run_dir: str, metric: str) -> str:
    """The intact checkpoint of the run at ``run_dir`` with the lowest ``metric`` in its metrics.json."""
    scored = []
    for name in _checkpoint_dirs(run_dir):
        uri = storage.join(run_dir, name)
        with local_copy(uri) as directory:
            if problem(directory) is None:
                scored.append((float(read_metrics(directory).get(metric, float("inf"))), uri))
    if not scored:
        raise CheckpointError(f"no intact checkpoint in {storage.resolve(run_dir).uri}")
    return min(scored)[1]


def restore_newest_intact(
    run_dir: str, model, optimizer, say: Callable[[str], None] | None = None
) -> tuple[int, dict, str]:
    """In a Train worker that Ray handed a checkpoint: restore from the newest intact checkpoint of the
    run (Ray's latest, unless it fails verification); returns (epoch, its metrics, its URI)."""
    point = newest_intact(run_dir)
    if point is None:
        raise CheckpointError(f"Ray Train handed over a checkpoint, but {run_dir} holds no checkpoint folder")
    for name, why in point.skipped:
        if say:
            say(f"{name} fails verification ({why}); resuming from {point.uri}")
    with local_copy(point.uri) as directory:
        return restore_training_state(directory, model, optimizer), read_metrics(directory), point.uri


@dataclass
class LoadedModel:
    uri: str
    run_config: RunConfig
    model: Any  # vae.models.VAE
    latent_stats: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    epoch: int = 0
    expost: dict = field(default_factory=dict)


# Sampling keys fitted in training (the ex-post mixtures stored with the checkpoint): not a decoding choice.
FITTED_IN_TRAINING = ("expost_components", "expost_covariance")


def check_decoding(overrides: Mapping[str, Any]) -> None:
    """Raise ConfigError unless ``overrides`` are ``SamplingConfig`` keys and values a trained checkpoint can
    decode with (not those its ex-post mixtures were fitted with in training)."""
    from vae.config import SamplingConfig
    from vae.overrides import apply_overrides

    fitted = sorted(set(overrides) & set(FITTED_IN_TRAINING))
    if fitted:
        raise ConfigError(
            f"sampling.{fitted[0]}: the checkpoint's ex-post mixtures were fitted with it in training; "
            "it cannot change when decoding"
        )
    apply_overrides(SamplingConfig(), overrides)


def with_sampling(loaded: LoadedModel, overrides: Mapping[str, Any]) -> LoadedModel:
    """``loaded`` decoding with its ``SamplingConfig`` changed by ``overrides`` (``{"harmonic_depth_db": 15}``),
    checked by :func:`check_decoding`."""
    check_decoding(overrides)
    if not overrides:
        return loaded
    from vae.overrides import apply_overrides

    sampling = apply_overrides(loaded.run_config.sampling, overrides)
    return replace(loaded, run_config=replace(loaded.run_config, sampling=sampling))


def load_local(directory: str, uri: str | None = None) -> LoadedModel:
    """Load a verified local checkpoint; every failure is a :class:`CheckpointError` naming it and the file
    (one found before TensorFlow loads when it can be)."""
    verify(directory, uri)
    try:
        run_cfg = compat.run_config(_read_json(directory, CONFIG, uri)).validate()
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {uri or directory}: {CONFIG} is not a valid RunConfig: {exc}") from None
    epoch = _epoch(directory, uri)
    latent_stats, metrics = _read_json(directory, LATENT_STATS, uri, {}), _read_json(directory, METRICS, uri, {})
    from vae.models import build_vae

    # Inference never needs float16: the weights load into a float32 model either way.
    model = build_vae(
        run_cfg.features.shape,
        run_cfg.model,
        run_cfg.prior,
        run_cfg.loss,
        mixed_precision=False,
        features=run_cfg.features,
    )
    _load_weights(model, directory, uri)
    expost = _read_json(directory, EXPOST, uri, {})
    return LoadedModel(
        uri=uri or directory,
        run_config=run_cfg,
        model=model,
        latent_stats=latent_stats,
        metrics=metrics,
        epoch=epoch,
        expost=expost,
    )


def in_memory(directory: str, model) -> LoadedModel:
    """A local checkpoint a Train worker has just written, around the model it was saved from (still
    in memory): no copy, no verification, no second model."""

    def read(name: str) -> Any:
        return _read_json(directory, name, None, {})

    return LoadedModel(
        uri=directory,
        run_config=from_dict(RunConfig, _read_json(directory, CONFIG, None)),
        model=model,
        latent_stats=read(LATENT_STATS),
        metrics=read(METRICS),
        epoch=_epoch(directory, None),
        expost=read(EXPOST),
    )


def _score(checkpoint_uri: str) -> tuple[str, float] | None:
    """What the checkpoint was ranked by and its value, from its metrics.json: the objective where its run
    ranked by one (a sweep's trial, ``train.rank_by``), else :data:`vae.objective.SCORE_METRIC`; None if
    unreadable."""
    try:
        metrics = storage.read_json(storage.join(checkpoint_uri, METRICS))
        metric = OBJECTIVE if OBJECTIVE in metrics else SCORE_METRIC
        value = metrics.get(metric)
        return None if value is None else (metric, float(value))
    except (storage.StorageError, ValueError, TypeError, AttributeError):
        return None


def _run_advice(run_dir: str, names: list[str]) -> str:
    """A training run given for a checkpoint: its best checkpoint to pass instead, and its others."""
    scores = {name: _score(storage.join(run_dir, name)) for name in names[:MAX_LISTED]}
    metric = OBJECTIVE if any(s is not None and s[0] == OBJECTIVE for s in scores.values()) else SCORE_METRIC
    scored = {name: s[1] for name, s in scores.items() if s is not None and s[0] == metric}
    best = min(scored, key=scored.__getitem__) if scored else names[0]
    listed = ", ".join(f"{n} ({metric} {scored[n]:.4g})" if n in scored else n for n in scores)
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    which = f"its best by {metric}" if scored else "its newest"
    return (
        f"{run_dir} is a training run, not a checkpoint: pass {which}, --checkpoint {storage.join(run_dir, best)}; "
        f"its checkpoints: {listed}{more}"
    )


def what_else(uri: str) -> str | None:
    """What the folder ``uri`` holds when it is something this project writes but not a checkpoint (a
    training run, a sweep or pipeline experiment, a recogniser, a Parquet dataset), and what to pass
    instead; None for anything else. Reads listings and small files only."""
    names = _checkpoint_dirs(uri)
    if names:
        return _run_advice(uri, names)
    for name in _folders(uri):
        inner = storage.join(uri, name)
        if storage.is_published(inner) and storage.exists(storage.join(storage.published(inner), CONFIG)):
            return f"{uri} is a sweep, not a checkpoint: its best checkpoint is --checkpoint {inner}"
        runs = _checkpoint_dirs(inner)
        if runs:
            return f"{uri} is an experiment, not a checkpoint; {_run_advice(inner, runs)}"
    if _holds_recogniser(uri):
        return f"{uri} is a digit recogniser (jobs.train_classifier), not a VAE checkpoint: pass it as --recogniser"
    if storage.list_files(storage.published(uri), suffix=".parquet", recursive=False):
        return f"{uri} is a Parquet dataset (jobs.preprocess), not a checkpoint: pass it as --data"
    return None


def _holds_recogniser(uri: str) -> bool:
    """Whether the folder's config.json is a digit recogniser's (one missing or unreadable is not)."""
    try:
        data = storage.read_json(storage.join(uri, CONFIG))
    except (storage.StorageError, ValueError):  # not JSON, not text
        return False
    return isinstance(data, dict) and RECOGNISER_SECTION in data


def check_recogniser(uri: str) -> str:
    """``uri`` after checking, without loading it, that it holds a digit recogniser; anything else
    is a :class:`CheckpointError` saying what it is."""
    if not storage.exists(uri):
        raise CheckpointError(f"recogniser {uri} does not exist")
    if _holds_recogniser(uri):
        return uri
    if storage.exists(storage.join(uri, CONFIG)):
        raise CheckpointError(f"{uri} is a VAE checkpoint, not a recogniser (jobs.train_classifier writes those)")
    why = what_else(uri)
    raise CheckpointError(why.replace("not a checkpoint", "not a recogniser") if why else f"{uri} is not a recogniser")


def check(uri: str) -> tuple[str, RunConfig]:
    """Without loading the model: the directory ``uri`` resolves to (a published ``best/``
    pinned to its current version) and its validated config. Raises :class:`CheckpointError`,
    saying what ``uri`` is when it is a run, a sweep, a recogniser or a dataset."""
    if not storage.exists(uri):
        raise CheckpointError(f"checkpoint {uri} does not exist")
    resolved = storage.published(uri)
    manifest = storage.join(resolved, MANIFEST)  # load verifies sizes and hashes; here, presence

    def present(name: str) -> bool:
        return storage.exists(storage.join(resolved, name))

    if storage.exists(manifest):
        missing = [name for name in storage.read_json(manifest).get("files", {}) if not present(name)]
    else:
        _refuse_other_things(uri)
        missing = compat.unmanifested_checkpoint_missing(present)
    if missing:
        raise CheckpointError(f"checkpoint {resolved} is missing {missing}")
    try:
        return resolved, compat.run_config(json.loads(storage.read_text(storage.join(resolved, CONFIG)))).validate()
    except ValueError as exc:  # ConfigError and JSON errors
        raise CheckpointError(f"checkpoint {resolved}: {CONFIG} is not a valid run config: {exc}") from exc


def _refuse_other_things(uri: str) -> None:
    """A :class:`CheckpointError` saying what ``uri`` (a folder without a manifest) is, when it is
    something :func:`what_else` recognises."""
    why = what_else(uri)
    if why:
        raise CheckpointError(why)


def load(uri: str) -> LoadedModel:
    """Load a checkpoint from a local directory or ``s3://`` (downloaded to a temp dir first).

    A directory made by :func:`vae.storage.publish` (a sweep's ``best/``) resolves to its
    current published version.
    """
    given = uri
    if storage.exists(uri):
        uri = storage.published(uri)
    if not storage.exists(uri):
        raise CheckpointError(f"checkpoint {uri} does not exist")
    if not storage.is_dir(uri):
        raise CheckpointError(f"checkpoint {uri} is a file; a checkpoint is a folder")
    if not storage.exists(storage.join(uri, MANIFEST)):
        _refuse_other_things(given)
    with local_copy(uri) as directory:
        return load_local(directory, uri)
