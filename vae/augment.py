"""Speaker augmentation: more voices than the training speakers, made from their spectrograms.

Five speakers are few voices to learn the space of voices from; a voice never heard is mostly a
different vocal tract (formants higher or lower), pitch, speaking rate and microphone. Each copy of a
training clip is drawn with

- a frequency warp by ``alpha`` (vocal-tract-length perturbation, Jaitly & Hinton 2013): output bin
  ``k`` is the input at ``k / alpha``; harmonics move with the envelope, so the clip's f0 track is
  scaled by ``alpha`` too and stays the pitch of what is drawn;
- a tempo change by ``rate``: output frame ``t`` is the input at ``t * rate`` (the f0 track likewise);
- a spectral tilt: a straight line in dB across the band, from ``-tilt/2`` to ``+tilt/2`` (a microphone's
  or a voice's brightness).

Everything works on the normalised spectrogram in numpy, on the features' grid, so it runs as a Ray
Data stage on the training split (:func:`augment_dataset`) and nowhere else: the test split, the
held-out speaker and every evaluation see only real clips.
"""

from __future__ import annotations

import zlib
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from vae.config import FeatureConfig, TrainConfig


def _resample_axis(x: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """``x`` linearly interpolated at fractional ``positions`` along ``axis``; past the last index, the last value."""
    last = x.shape[axis] - 1
    pos = np.clip(positions, 0.0, last)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, last)
    frac = (pos - lo).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def warp_frequency(spectrogram: np.ndarray, alpha: float) -> np.ndarray:
    """(n_bins, n_frames) with every frequency scaled by ``alpha``: output bin k is the input at k / alpha."""
    n_bins = spectrogram.shape[0]
    return _resample_axis(spectrogram, np.arange(n_bins) / alpha, axis=0)


def change_tempo(spectrogram: np.ndarray, f0: np.ndarray | None, rate: float):
    """(spectrogram, f0) said ``rate`` times as fast: output frame t is the input at t * rate; frames past
    the clip's end take its last frame (FSDD's clips end in silence) and an unvoiced f0."""
    n_frames = spectrogram.shape[1]
    positions = np.arange(n_frames) * rate
    out = _resample_axis(spectrogram, positions, axis=1)
    if f0 is None:
        return out, None
    nearest = np.minimum(np.rint(positions).astype(int), n_frames - 1)
    return out, np.where(positions <= n_frames - 1, f0[nearest], 0.0).astype(f0.dtype)


def tilt(spectrogram: np.ndarray, tilt_db: float, cfg: FeatureConfig) -> np.ndarray:
    """A straight line of ``tilt_db`` dB from the lowest bin to the highest added to every frame, centred on
    the band's middle, on the features' normalised [0, 1] scale (clipped to it)."""
    width = cfg.db_ceiling - cfg.db_floor
    line = tilt_db * (np.linspace(0.0, 1.0, spectrogram.shape[0]) - 0.5) / width
    return np.clip(spectrogram + line[:, None].astype(spectrogram.dtype), 0.0, 1.0)


def draw(rng: np.random.Generator, tcfg: TrainConfig) -> tuple[float, float, float]:
    """(alpha, rate, tilt in dB) of one copy: alpha and rate log-uniform within their ranges, tilt uniform."""
    alpha = float(np.exp(rng.uniform(-1, 1) * np.log1p(tcfg.augment_warp)))
    rate = float(np.exp(rng.uniform(-1, 1) * np.log1p(tcfg.augment_tempo)))
    return alpha, rate, float(rng.uniform(-0.5, 0.5) * 2 * tcfg.augment_tilt_db)


def augment_clip(spectrogram, f0, alpha: float, rate: float, tilt_db: float, cfg: FeatureConfig):
    """One clip's (spectrogram, f0) warped by ``alpha``, retimed by ``rate`` and tilted by ``tilt_db``."""
    out = warp_frequency(spectrogram, alpha)
    out, f0 = change_tempo(out, f0, rate)
    if f0 is not None:
        f0 = (f0 * alpha).astype(np.float32)
    return tilt(out, tilt_db, cfg).astype(np.float32), f0


def augment_batch(batch: dict[str, np.ndarray], copy: int, tcfg: TrainConfig, cfg: FeatureConfig) -> dict[str, Any]:
    """A Ray Data batch of clips as their ``copy``-th augmented copies: each drawn from (seed, copy, clip
    id) alone, so a run is the same however the rows are split into blocks; ids get ``~a<copy>``."""
    out = dict(batch)
    specs, f0s = [], []
    for i, clip_id in enumerate(batch["id"]):
        rng = np.random.default_rng([tcfg.seed, copy, zlib.crc32(str(clip_id).encode())])
        f0 = batch["f0"][i] if "f0" in batch else None
        spec, f0 = augment_clip(batch["spectrogram"][i], f0, *draw(rng, tcfg), cfg)
        specs.append(spec)
        f0s.append(f0)
    out["spectrogram"] = np.stack(specs)
    if "f0" in batch:
        out["f0"] = np.stack(f0s)
    out["id"] = np.array([f"{clip_id}~a{copy}" for clip_id in batch["id"]], dtype=object)
    return out


def _tensor_column(like: pa.ChunkedArray, values: np.ndarray) -> pa.Array:
    storage = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values, np.float32)).storage
    return pa.ExtensionArray.from_storage(like.type, storage)


def augment_table(table: pa.Table, copy: int, tcfg: TrainConfig, cfg: FeatureConfig) -> pa.Table:
    """:func:`augment_batch` on an Arrow block, keeping its schema (the dataset's tensor types), so the
    copies and the real rows form one dataset."""
    tensors = [name for name in ("spectrogram", "f0") if name in table.column_names]
    batch = {name: table.column(name).combine_chunks().to_numpy_ndarray() for name in tensors}
    batch["id"] = np.array(table.column("id").to_pylist(), dtype=object)
    out = augment_batch(batch, copy, tcfg, cfg)
    for name in tensors:
        table = table.set_column(
            table.schema.get_field_index(name), table.schema.field(name), _tensor_column(table.column(name), out[name])
        )
    ids = pa.array(list(out["id"]), type=table.schema.field("id").type)
    return table.set_column(table.schema.get_field_index("id"), table.schema.field("id"), ids)


def augment_dataset(ds, tcfg: TrainConfig, cfg: FeatureConfig):
    """The Ray Dataset ``ds`` (training rows) followed by ``tcfg.augment_copies`` augmented copies of
    every row, materialised; ``ds`` itself when there are none."""
    if tcfg.augment_copies == 0:
        return ds
    copies = [
        ds.map_batches(partial(augment_table, copy=c, tcfg=tcfg, cfg=cfg), batch_format="pyarrow")
        for c in range(1, tcfg.augment_copies + 1)
    ]
    return ds.union(*copies).materialize()
