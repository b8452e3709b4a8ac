"""Readers of artefacts in the layouts of earlier versions of this code.

Each function here is called where its artefact is read and returns it in the current layout, so the rest
of the code knows only that one: saved run configs (checkpoints, run folders, sweeps), a sweep's
``sweep.json`` and stored trial parameters, checkpoints without ``manifest.json``, and dataset folders
holding their parts themselves instead of a published version.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vae.config import ConfigError, RunConfig, SweepConfig, from_dict, to_dict

if TYPE_CHECKING:
    from vae.storage import Location

# Keys an old run config lacks, at the values it was trained and sampled with (the current defaults differ).
MISSING_KEYS: dict[str, dict[str, Any]] = {
    "model": {"conditional": False, "decoder_width": 1.0, "pitch": False},
    "loss": {"reconstruction": "mse", "through_harmonics": False},
    "sampling": {"sampler": "prior"},
    "train": {"clip_norm": 0.0, "fused_batch_norm": False},
}

# Dotted keys of an old run config, trial parameters or space file -> their current place.
MOVED_KEYS: dict[str, str] = {
    f"prior.{name}": f"loss.{name}"
    for name in ("reconstruction", "recon_weight", "gaussian_init_scale", "kl_samples", "kl_warmup_epochs")
}

# Keys an old run config has that a RunConfig does not (the fault switch is FaultConfig, outside it).
DROPPED_KEYS: dict[str, tuple[str, ...]] = {"train": ("fault_epoch", "fault_rank")}

# The sweep settings an old sweep.json holds at its top level instead of under "settings".
SWEEP_TOP_LEVEL_SETTINGS = ("num_samples", "n_per_digit", "workers_per_trial", "use_gpu")

# What a checkpoint without manifest.json must hold to be whole (vae.checkpoint's file names).
UNMANIFESTED_CHECKPOINT = ("model.weights.h5", "config.json", "state.json", "metrics.json", "latent_stats.json")


def run_config(data: Mapping[str, Any]) -> RunConfig:
    """A saved RunConfig of any layout (not validated)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"RunConfig: expected a mapping, got {type(data).__name__}")
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split(".", 1), new.split(".", 1)
        if not isinstance(data.get(old_section), dict) or old_name not in data[old_section]:
            continue
        value, target = data[old_section].pop(old_name), data.setdefault(new_section, {})
        if isinstance(target, dict):  # (anything else fails in from_dict, naming the section)
            if new_name in target:
                raise ConfigError(f"RunConfig: both {old} (its old place) and {new} are given; keep {new}")
            target[new_name] = value
    for section, keys in MISSING_KEYS.items():
        if isinstance(data.setdefault(section, {}), dict):
            for key, value in keys.items():
                data[section].setdefault(key, value)
    for section, names in DROPPED_KEYS.items():
        if isinstance(data.get(section), dict):
            for name in names:
                data[section].pop(name, None)
    return from_dict(RunConfig, data)


def trial_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters as Ray Tune stored them, with every dotted key at its current place."""
    return {MOVED_KEYS.get(key, key): value for key, value in params.items()}


def sweep(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``sweep.json`` of any layout: ``settings`` a SweepConfig's dict, ``base`` a RunConfig's."""
    out = dict(data)
    if "settings" not in out:
        out["settings"] = {k: out.pop(k) for k in SWEEP_TOP_LEVEL_SETTINGS if k in out}
    out["settings"] = to_dict(from_dict(SweepConfig, out["settings"]))
    out["base"] = to_dict(run_config(out.get("base", {})))
    return out


def unmanifested_checkpoint_missing(exists: Callable[[str], bool]) -> list[str]:
    """The files a checkpoint without ``manifest.json`` lacks, of :data:`UNMANIFESTED_CHECKPOINT`;
    ``exists(name)`` says whether the checkpoint holds the file ``name``."""
    return [name for name in UNMANIFESTED_CHECKPOINT if not exists(name)]


def dataset_summary(folder: Location, files: list[str], summary: Mapping[str, Any], redo: str) -> dict[str, Any]:
    """The ``_summary.json`` of a dataset folder that holds its parts itself, with ``parts`` (name -> rows)
    as a published version's lists them. Raises StorageError unless every part belongs to the run the
    summary names and together they hold the rows it counts, which an interrupted extraction never leaves."""
    from vae import parts, storage

    runs = {parts.part_run(posixpath.basename(f)) for f in files}
    rows_by_part = parts.part_rows(folder, files) if runs == {summary.get("run_id")} else None
    rows = None if rows_by_part is None else sum(rows_by_part.values())
    if rows != summary.get("written"):
        raise storage.StorageError(
            f"{folder.uri} is not one whole dataset: parts of {len(runs)} extraction run(s) holding "
            f"{'an unknown number of' if rows is None else rows} rows, its {parts.SUMMARY_FILE} counts "
            f"{summary.get('written')} rows of run {summary.get('run_id')}: left by an interrupted extraction; {redo}"
        )
    return {**summary, "parts": rows_by_part}


def remove_unpublished_dataset(out: Location) -> None:
    """Remove the parts, ``_rejected/`` and summary a dataset folder holds itself, once a version of it is
    published (readers follow ``PUBLISHED.json``)."""
    from vae import parts, storage

    for path in parts.part_files(out):
        storage.delete_tree(out.join(posixpath.basename(path)).uri)
    for name in (parts.REJECTED_DIR, parts.SUMMARY_FILE):
        storage.delete_tree(out.join(name).uri)
