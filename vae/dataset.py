"""FSDD recordings -> Parquet spectrograms with Ray Data, and the readers of that Parquet.

What :func:`extract` writes at ``DST`` (a local folder or ``s3://bucket/prefix``)::

    DST/PUBLISHED.json                                  {"version": V, ...}: the dataset to read
    DST/V/part-<run>-<block>.parquet                    one row per clip, schema :func:`clip_schema`
    DST/V/_rejected/part-<run>-<block>.parquet          one row per bad input: source, reason
    DST/V/_summary.json                                 counts, run id, input, FeatureConfig, part files

A dataset is published all-or-nothing: every part and the summary are written into
a fresh version folder ``V`` (``_v<time>-<random>``), and only then does the one-object
pointer ``PUBLISHED.json`` switch to it (:func:`vae.storage.switch`). An extraction that
is interrupted, killed or fails leaves the published dataset as it was; two at once
into one ``DST``: the last to finish wins, whole. The readers here read only a
published dataset (or a folder holding the parts and summary of exactly one finished
run itself: :func:`vae.compat.dataset_summary`) and fail naming the folder otherwise.

The FeatureConfig is also JSON in every part file's schema metadata under
:data:`FEATURES_KEY`, so a reader can invert a row without being told the preset.
The spectrogram column is Arrow's canonical ``arrow.fixed_shape_tensor``: plain
pyarrow reads it as a :class:`pyarrow.FixedShapeTensorArray`
(``to_numpy_ndarray()`` gives ``(rows, n_bins, n_frames)`` float32); pandas gives
one flat float32 array per row (reshape with ``FeatureConfig.shape``), or keeps the
tensor type with ``dtype_backend="pyarrow"``. Plain pyarrow and pandas read the
version folder (the ``dataset`` field of the job's JSON line, or
``DST/<PUBLISHED.json's version>``); files and folders whose names start with ``_``
are ignored by their dataset readers, so ``pd.read_parquet(DST/V)`` reads the clips only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vae import compat, storage
from vae.config import N_DIGITS, SPEAKER, ConfigError, FeatureConfig, from_json, to_dict, to_json
from vae.errors import UserError
from vae.features import (
    AudioError,
    Clip,
    decode_audio,
    decode_audios,
    waveform_to_spectrogram,
    waveforms_to_spectrograms,
)
from vae.harmonics import pitch_track, pitch_tracks
from vae.parts import REJECTED_DIR, SUMMARY_FILE, part_files, part_rows
from vae.raysetup import cluster_cpus

FEATURES_KEY = "fsdd_vae.features"
SPLITS = ("train", "test")
# FSDD's official split: takes 0-4 of every speaker and digit are the test set.
FIRST_TRAIN_TAKE = 5
_NAME = re.compile(rf"(\d)_({SPEAKER})_(\d+)\.wav", re.IGNORECASE)
# Clips per input block of the pipeline: small enough that work spreads over the
# cluster and progress moves, large enough that per-task overhead stays negligible.
_CLIPS_PER_BLOCK = 64
# What an extraction task imports (vae.features loads soundfile and soxr, vae.harmonics librosa, when
# first used): a job can have a fresh instance's workers load it ahead (vae.raysetup.warm_workers).
WORKER_MODULES = ("ray.data", "vae.dataset", "soundfile", "soxr", "librosa")


class ExtractError(UserError, RuntimeError):
    """The extraction cannot run or produced nothing; the message names the input or output path."""


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Labels:
    id: str
    digit: int
    speaker: str
    take: int
    split: str


def parse_name(path: str) -> Labels:
    """``.../{digit}_{speaker}_{take}.wav`` -> labels and split (takes 0-4 test, the rest train).

    Raises ValueError whose message is the rejection reason.
    """
    name = posixpath.basename(str(path).replace("\\", "/"))
    m = _NAME.fullmatch(name)
    if not m:
        raise ValueError(
            f"name {name!r} does not match {{digit}}_{{speaker}}_{{take}}.wav "
            "(speaker: up to 64 letters, digits and hyphens, starting with a letter or digit)"
        )
    digit, speaker, take = int(m.group(1)), m.group(2), int(m.group(3))
    split = "test" if take < FIRST_TRAIN_TAKE else "train"
    return Labels(name[: -len(".wav")], digit, speaker, take, split)


# --------------------------------------------------------------------------- schema


def clip_schema(cfg: FeatureConfig) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("digit", pa.int64()),
            ("speaker", pa.string()),
            ("take", pa.int64()),
            ("split", pa.string()),
            ("spectrogram", pa.fixed_shape_tensor(pa.float32(), list(cfg.shape))),
            ("f0", pa.fixed_shape_tensor(pa.float32(), [cfg.n_frames])),
            ("source", pa.string()),
            ("source_sample_rate", pa.int64()),
            ("duration_s", pa.float64()),
            ("db_min", pa.float64()),
            ("db_max", pa.float64()),
        ],
        metadata={FEATURES_KEY: to_json(cfg)},
    )


REJECTED_SCHEMA = pa.schema([("source", pa.string()), ("reason", pa.string())])


def clips_table(rows: Sequence[dict[str, Any]], cfg: FeatureConfig) -> pa.Table:
    """Rows from :func:`extract_clip` as an Arrow table in :func:`clip_schema`."""
    schema = clip_schema(cfg)
    arrays = []
    for f in schema:
        if isinstance(f.type, pa.FixedShapeTensorType):
            values = np.empty((len(rows), *f.type.shape), dtype=np.float32)
            for i, r in enumerate(rows):
                values[i] = r[f.name]
            storage_array = pa.FixedShapeTensorArray.from_numpy_ndarray(values).storage
            arrays.append(pa.ExtensionArray.from_storage(f.type, storage_array))
        else:
            arrays.append(pa.array([r[f.name] for r in rows], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- one clip


def extract_clip(source: str, data: bytes, cfg: FeatureConfig) -> dict[str, Any]:
    """One clip's row. Raises ValueError (bad name) or AudioError (bad audio) naming the reason."""
    labels = parse_name(source)
    clip = decode_audio(data, cfg)
    check_duration(clip.duration_s, cfg)
    return _row(source, labels, clip, pitch_track(clip.waveform, cfg), *waveform_to_spectrogram(clip.waveform, cfg))


def _row(
    source: str, labels: Labels, clip: Clip, f0: np.ndarray, spec: np.ndarray, db_min: float, db_max: float
) -> dict[str, Any]:
    return dict(
        vars(labels),
        spectrogram=spec,
        f0=f0,
        source=source,
        source_sample_rate=clip.source_sample_rate,
        duration_s=clip.duration_s,
        db_min=db_min,
        db_max=db_max,
    )


def check_duration(duration_s: float, cfg: FeatureConfig) -> None:
    """Raise AudioError for a clip shorter than ``cfg.min_clip_seconds`` (a 1-sample or 10 ms file is no digit)."""
    if duration_s < cfg.min_clip_seconds:
        raise AudioError(
            f"too short: {duration_s * 1000:.1f} ms, below FeatureConfig.min_clip_seconds={cfg.min_clip_seconds:g} s"
        )


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _read_named(
    items: Iterable[dict[str, str]], fs: pafs.FileSystem
) -> tuple[list[tuple[str, Labels]], list[bytes], list[dict[str, str]]]:
    """The items whose names parse and files read, with their bytes; the others with why."""
    rejected: list[dict[str, str]] = []
    named: list[tuple[str, Labels]] = []
    datas: list[bytes] = []
    for item in items:
        source, reason = item["source"], item.get("reason") or ""
        if not reason:
            try:
                labels = parse_name(source)  # a bad name costs no read
                datas.append(_read(fs, item["path"]))
                named.append((source, labels))
                continue
            except ValueError as exc:
                reason = str(exc)
            except OSError as exc:
                reason = f"cannot read: {exc}"
            except Exception as exc:  # noqa: BLE001 - one bad clip must not kill the job
                reason = _unexpected(exc)
        rejected.append({"source": source, "reason": reason})
    return named, datas, rejected


def extract_rows(
    items: Iterable[dict[str, str]], fs: pafs.FileSystem, cfg: FeatureConfig
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(rows, rejected) for items ``{"source": uri, "path": path in fs, "reason": ""}``. Never raises.

    The clips are read one by one, then decoded, resampled and featurised together
    (:func:`vae.features.decode_audios`, :func:`vae.features.waveforms_to_spectrograms`).
    """
    named, datas, rejected = _read_named(items, fs)
    # Each named clip becomes a Clip or why it has none, then its row or why it has none.
    decoded: list[Clip | Exception]
    try:
        decoded = list(decode_audios(datas, cfg))
    except Exception:  # noqa: BLE001 - an input broke the batch: one by one, to name it
        decoded = [_attempt(decode_audio, data, cfg) for data in datas]
    clips = [
        (_attempt(check_duration, clip.duration_s, cfg) or clip) if isinstance(clip, Clip) else clip for clip in decoded
    ]
    kept = [(i, clip) for i, clip in enumerate(clips) if isinstance(clip, Clip)]
    waveforms = [clip.waveform for _, clip in kept]
    features: list[tuple[np.ndarray, float, float] | Exception]
    try:
        batch = waveforms_to_spectrograms(waveforms, cfg)
        features = [
            batch.errors[k] or (batch.spec[k], float(batch.db_min[k]), float(batch.db_max[k])) for k in range(len(kept))
        ]
    except Exception:  # noqa: BLE001
        features = [_attempt(waveform_to_spectrogram, y, cfg) for y in waveforms]
    tracks: Sequence[np.ndarray | Exception]
    try:
        tracks = list(pitch_tracks(waveforms, cfg))
    except Exception:  # noqa: BLE001
        tracks = [_attempt(pitch_track, y, cfg) for y in waveforms]
    outcomes: dict[int, dict[str, Any] | Exception] = {
        i: clip for i, clip in enumerate(clips) if isinstance(clip, Exception)
    }
    for (i, clip), feature, f0 in zip(kept, features, tracks):
        if isinstance(feature, Exception):
            outcomes[i] = feature
        elif isinstance(f0, Exception):
            outcomes[i] = f0
        else:
            spec, db_min, db_max = feature
            outcomes[i] = _row(*named[i], clip, f0, spec, db_min, db_max)

    rows: list[dict[str, Any]] = []
    for i, (source, _) in enumerate(named):
        result = outcomes[i]
        if isinstance(result, AudioError):
            rejected.append({"source": source, "reason": str(result)})
        elif isinstance(result, Exception):
            rejected.append({"source": source, "reason": _unexpected(result)})
        else:
            rows.append(result)
    return rows, rejected


def _attempt(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, or the exception it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc


def _unexpected(exc: Exception) -> str:
    return f"unexpected {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- writing


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """``pq.write_table`` options for a table in :func:`clip_schema` (or any schema): array columns
    (a tensor extension type such as the spectrogram's, or any list) without dictionary encoding and
    without min/max statistics. Parquet would dictionary-encode a spectrogram's floats until the
    dictionary outgrows its page and then fall back to plain encoding, and nothing filters on their
    statistics: a faster write for a slightly larger file (docs/benchmarks.md)."""
    scalar = [f.name for f in schema if not _is_array(f.type)]
    return dict(use_dictionary=scalar, write_statistics=scalar)


def _is_array(t: pa.DataType) -> bool:
    t = t.storage_type if isinstance(t, pa.ExtensionType) else t
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def write_parquet(table: pa.Table, where: Any, **kwargs: Any) -> None:
    """``pq.write_table`` with :func:`parquet_options`: how every clips file is written."""
    pq.write_table(table, where, **parquet_options(table.schema), **kwargs)


def _write_table(table: pa.Table, loc: storage.Location) -> None:
    try:
        if storage.is_s3(loc.uri):
            write_parquet(table, loc.path, filesystem=loc.fs)
            return
        # Locally, a hidden temporary name then a rename: readers never see half a file.
        tmp = os.path.join(os.path.dirname(loc.path), f".{os.path.basename(loc.path)}.tmp")
        write_parquet(table, tmp, filesystem=loc.fs)
        loc.fs.move(tmp, loc.path)
    except OSError as exc:
        raise storage.StorageError(f"cannot write {loc.uri}: {exc}") from exc


def _extract_and_write(
    batch: dict[str, np.ndarray], fs: pafs.FileSystem, cfg: FeatureConfig, out: storage.Location, run_id: str
) -> dict[str, list]:
    """Ray Data UDF: one block of inputs -> one clips file and one rejected file; returns their counts.

    The file name is a digest of the block's sources, so a retried task rewrites
    the same file instead of adding a duplicate.
    """
    cpu_started = time.process_time()
    items = [{"source": s, "path": p, "reason": r} for s, p, r in zip(batch["source"], batch["path"], batch["reason"])]
    rows, rejected = extract_rows(items, fs, cfg)
    digest = hashlib.sha1("\n".join(i["source"] for i in items).encode()).hexdigest()[:16]
    name = f"part-{run_id}-{digest}.parquet"
    if rows:
        _write_table(clips_table(rows, cfg), out.join(name))
    if rejected:
        _write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), out.join(REJECTED_DIR, name))
    splits = Counter(r["split"] for r in rows)
    return {
        "written": [len(rows)],
        "train": [splits["train"]],
        "test": [splits["test"]],
        "rejected": [json.dumps(rejected)],
        "cpu_s": [time.process_time() - cpu_started],
    }


def _check_staged(stage: storage.Location, written: int, rejected: int) -> dict[str, int]:
    """The staged parts (name -> rows), after checking they hold exactly the rows the tasks reported."""
    parts = part_rows(stage, part_files(stage))
    rejected_rows = sum(part_rows(stage.join(REJECTED_DIR), part_files(stage.join(REJECTED_DIR))).values())
    if sum(parts.values()) != written or rejected_rows != rejected:
        raise ExtractError(
            f"{stage.uri} holds {sum(parts.values())} clips and {rejected_rows} rejections, the extraction wrote "
            f"{written} and {rejected}: another extraction into the same output removed or changed it; nothing was published"
        )
    return parts


def _discard(stage: storage.Location) -> None:
    """Best effort: the caller's own error is the one to report, and a leftover is removed by the next publish."""
    try:
        storage.delete_tree(stage.uri)
    except storage.StorageError:
        pass


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class ExtractSummary:
    input: str
    output: str
    rejected_output: str
    written: int
    rejected: int
    train: int
    test: int
    seconds: float
    run_id: str
    worker_cpu_s: float  # CPU time of the extraction tasks, summed over workers
    dataset: str = ""  # the published version folder; "" when nothing was written and nothing published
    rejected_examples: list[dict[str, str]] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)


def list_inputs(src: str | Sequence[str]) -> list[str]:
    """The ``.wav`` URIs to extract: every ``.wav`` under a folder/prefix, or an explicit list.

    Raises StorageError naming ``src`` if it does not exist or cannot be reached,
    ExtractError if it holds no ``.wav`` file.
    """
    if isinstance(src, (str, os.PathLike)):
        files = storage.list_files(os.fspath(src), suffix=".wav")
        if not files:
            raise ExtractError(f"no .wav files under {storage.resolve(src).uri}")
        return files
    files = [s if storage.is_s3(s) else storage.resolve(s).uri for s in map(os.fspath, src)]
    if not files:
        raise ExtractError("empty list of input files")
    if len({storage.is_s3(f) for f in files}) > 1:
        raise ExtractError("input files mix local paths and s3:// URIs")
    return files


def input_items(files: list[str]) -> list[dict[str, str]]:
    """Pipeline input rows. A second file with the same name (the row id) is rejected here."""
    seen: dict[str, str] = {}
    items = []
    for uri in files:
        name = posixpath.basename(uri.replace("\\", "/")).lower()
        reason = f"duplicate id: same name as {seen[name]}" if name in seen else ""
        seen.setdefault(name, uri)
        items.append({"source": uri, "path": uri[len("s3://") :] if storage.is_s3(uri) else uri, "reason": reason})
    return items


def default_num_blocks(n_inputs: int, cpus: int) -> int:
    """Blocks (one task and one Parquet file each) for ``n_inputs`` clips on ``cpus`` CPUs: four per CPU
    so that work spreads and progress moves, but never fewer than :data:`_CLIPS_PER_BLOCK` clips per block."""
    return max(1, min(max_blocks(n_inputs), 4 * max(1, cpus)))


def max_blocks(n_inputs: int) -> int:
    """The most blocks :func:`default_num_blocks` gives ``n_inputs`` clips on any cluster."""
    return max(1, math.ceil(n_inputs / _CLIPS_PER_BLOCK))


def extract(
    src: str | Sequence[str],
    dst: str,
    cfg: FeatureConfig,
    num_blocks: int | None = None,
    progress: Callable[[str], None] | None = print,
    listed: Sequence[str] | None = None,
) -> ExtractSummary:
    """Run the Ray Data extraction from ``src`` (folder, ``s3://`` prefix or list of files) into ``dst``.

    Uses this process's Ray (see :func:`vae.raysetup.init_ray`). Bad inputs are
    written to ``_rejected`` with their reason, never raised. Everything is written
    into a fresh version folder under ``dst`` that is published (see the module
    docstring) only when complete and holding at least one clip; until then readers
    of ``dst`` get the dataset published before, if any. A failed or interrupted
    run removes its version folder and raises (ExtractError naming ``dst`` for an error).
    When every input is rejected nothing is published and the version folder stays,
    with the reasons in its ``_rejected`` (``summary.rejected_output``). ``listed``:
    ``list_inputs(src)`` if the caller already has it (listing a large prefix takes time).
    """
    cfg.validate()
    started = time.perf_counter()
    files = list(listed) if listed is not None else list_inputs(src)
    src_uri = storage.resolve(src).uri if isinstance(src, (str, os.PathLike)) else f"{len(files)} listed files"
    out, version, stage = _new_stage(dst)
    run_id = uuid.uuid4().hex[:12]
    num_blocks = min(default_num_blocks(len(files), cluster_cpus()) if num_blocks is None else num_blocks, len(files))
    ds = _extraction(files, cfg, stage, run_id, num_blocks)
    if progress:
        progress(f"extract: {len(files)} inputs in {num_blocks} blocks -> {stage.uri}")
    try:
        tally = _tally(ds, len(files), started, progress)
        parts = _check_stage(stage, tally, run_id)
        summary = ExtractSummary(
            input=src_uri,
            output=out.uri,
            rejected_output=stage.join(REJECTED_DIR).uri,
            **tally.counts(),
            seconds=round(time.perf_counter() - started, 3),
            run_id=run_id,
            dataset=stage.uri if tally.written else "",
            rejected_examples=tally.rejected[:5],
            features=to_dict(cfg),
        )
        record = {k: v for k, v in asdict(summary).items() if k != "rejected_examples"}
        storage.write_json(stage.join(SUMMARY_FILE).uri, {**record, "parts": parts})
        if tally.written:
            storage.switch(out.uri, version)
    except BaseException as exc:  # KeyboardInterrupt too: Ctrl-C must not leave a half-written version behind
        _discard(stage)
        if isinstance(exc, Exception) and not isinstance(exc, ExtractError):
            raise ExtractError(
                f"extraction into {out.uri} failed, the dataset published there left as it was: {exc}"
            ) from exc
        raise
    if summary.written:
        compat.remove_unpublished_dataset(out)
    return summary


def _new_stage(dst: str) -> tuple[storage.Location, str, storage.Location]:
    """``dst`` (checked reachable), a fresh hidden version folder name and that folder, with its ``_rejected/``."""
    out = storage.resolve(dst)
    storage.check_reachable(out.uri)
    version = storage.new_version(hidden=True)
    stage = out.join(version)
    storage.makedirs(stage.join(REJECTED_DIR).uri)
    return out, version, stage


def _extraction(files: list[str], cfg: FeatureConfig, stage: storage.Location, run_id: str, num_blocks: int):
    """The Ray Dataset of the extraction: ``num_blocks`` tasks, each extracting its inputs and writing
    one Parquet part (and one of rejects) into the version folder ``stage``; one row of counts per task."""
    import ray

    items = ray.data.from_items(input_items(files), override_num_blocks=num_blocks)
    # batch_size=None: one batch per input block, so each block is one task writing one file.
    ds = items.map_batches(
        _extract_and_write,  # type: ignore[arg-type]  # Ray's annotation has no room for fn_kwargs' arguments
        fn_kwargs=dict(fs=storage.resolve(files[0]).fs, cfg=cfg, out=stage, run_id=run_id),
        batch_size=None,
        batch_format="numpy",
    )
    # Ray Data reserves part of the cluster per operator for multi-operator
    # pipelines; with one fused map whose outputs are a few counts it only holds
    # back the first wave of tasks, leaving a CPU idle. Set on this dataset's own
    # context copy only.
    ds.context.op_resource_reservation_enabled = False
    return ds


@dataclass
class _Tally:
    """What the extraction's tasks report, summed as their rows arrive."""

    written: int = 0
    train: int = 0
    test: int = 0
    worker_cpu_s: float = 0.0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return dict(
            written=self.written,
            rejected=len(self.rejected),
            train=self.train,
            test=self.test,
            worker_cpu_s=round(self.worker_cpu_s, 3),
        )


def _tally(ds, n_inputs: int, started: float, progress: Callable[[str], None] | None) -> _Tally:
    """Run the extraction, summing its tasks' counts and saying how far it got every 5 s and at the end."""
    tally, last_report = _Tally(), time.perf_counter()
    for r in ds.iter_rows():
        tally.written += int(r["written"])
        tally.train += int(r["train"])
        tally.test += int(r["test"])
        tally.worker_cpu_s += float(r["cpu_s"])
        tally.rejected += json.loads(r["rejected"])
        done = tally.written + len(tally.rejected)
        if progress and (time.perf_counter() - last_report > 5 or done == n_inputs):
            last_report = time.perf_counter()
            progress(
                f"extract: {done}/{n_inputs} inputs done, {tally.written} written, {len(tally.rejected)} rejected, {last_report - started:.1f} s"
            )
    tally.rejected.sort(key=lambda r: r["source"])
    return tally


def _check_stage(stage: storage.Location, tally: _Tally, run_id: str) -> dict[str, int]:
    """The staged version folder's parts, checked against what the tasks reported (its ``_rejected/``
    made a readable, possibly empty, dataset first)."""
    if not tally.rejected:
        _write_table(REJECTED_SCHEMA.empty_table(), stage.join(REJECTED_DIR, f"part-{run_id}-empty.parquet"))
    return _check_staged(stage, tally.written, len(tally.rejected))


def write_dataset(dst: str, clips: pa.Table, input: str = "") -> str:
    """Publish an Arrow table of clips (schema :func:`clip_schema`, e.g. a subset of another dataset)
    at ``dst`` as one part, the way :func:`extract` publishes; returns the version folder."""
    out = storage.resolve(dst)
    version = storage.new_version(hidden=True)
    stage = out.join(version)
    storage.makedirs(stage.join(REJECTED_DIR).uri)
    run_id = uuid.uuid4().hex[:12]
    name = f"part-{run_id}-0.parquet"
    _write_table(clips, stage.join(name))
    _write_table(REJECTED_SCHEMA.empty_table(), stage.join(REJECTED_DIR, name))
    splits = Counter(clips.column("split").to_pylist())
    features = json.loads((clips.schema.metadata or {}).get(FEATURES_KEY.encode(), b"{}"))
    summary = dict(
        input=input,
        output=out.uri,
        rejected_output=stage.join(REJECTED_DIR).uri,
        written=clips.num_rows,
        rejected=0,
        train=splits["train"],
        test=splits["test"],
        run_id=run_id,
        dataset=stage.uri,
        features=features,
        parts={name: clips.num_rows},
    )
    storage.write_json(stage.join(SUMMARY_FILE).uri, summary)
    storage.switch(out.uri, version)
    return stage.uri


# --------------------------------------------------------------------------- reading


def published_dataset(uri: str) -> tuple[storage.Location, list[str], dict[str, Any]]:
    """The folder holding the clips of the dataset at ``uri``, its part files (paths in its
    filesystem) and its summary. Raises StorageError naming ``uri`` unless it is one whole dataset:

    - a folder with ``PUBLISHED.json`` (:func:`extract`): its published version, whose part files
      must be exactly those its summary lists;
    - a version folder itself, checked the same way;
    - a folder holding its parts, ``_rejected/`` and ``_summary.json`` itself, without a version:
      read as :func:`vae.compat.dataset_summary` says;
    - a single Parquet file (no summary).
    """
    loc = storage.resolve(uri)
    if not storage.exists(loc.uri):
        raise storage.StorageError(f"{loc.uri} does not exist")
    if not storage.is_dir(loc.uri):
        return loc, [loc.path], {}
    folder = storage.resolve(storage.published(loc.uri))
    files = part_files(folder)
    redo = f"extract it again with python -m jobs.preprocess --out {loc.uri}"
    if not storage.exists(folder.join(SUMMARY_FILE).uri):
        if folder.uri != loc.uri:
            raise storage.StorageError(
                f"{loc.uri}: its published version {folder.uri} has no {SUMMARY_FILE}: damaged; {redo}"
            )
        if files:
            raise storage.StorageError(
                f"{loc.uri} holds Parquet parts but no published dataset (no {storage.PUBLISHED_POINTER} or {SUMMARY_FILE}): "
                f"an extraction into it was interrupted; {redo}"
            )
        raise storage.StorageError(f"{loc.uri} holds no published dataset (no {storage.PUBLISHED_POINTER}): {redo}")
    summary = storage.read_json(folder.join(SUMMARY_FILE).uri)
    if "parts" not in summary:
        summary = compat.dataset_summary(folder, files, summary, redo)
    names = {posixpath.basename(f) for f in files}
    if names != set(summary["parts"]):
        missing, extra = sorted(set(summary["parts"]) - names), sorted(names - set(summary["parts"]))
        raise storage.StorageError(
            f"{folder.uri} is damaged: parts missing {missing[:3]}, unexpected {extra[:3]}; {redo}"
        )
    if not files:
        raise storage.StorageError(f"{folder.uri} holds no clips; {redo}")
    return folder, files, summary


def parquet_files(uri: str) -> tuple[storage.Location, list[str]]:
    """The clip files of the dataset at ``uri`` (see :func:`published_dataset`), as paths in its filesystem."""
    loc, files, _ = published_dataset(uri)
    return loc, files


def read_feature_config(uri: str) -> FeatureConfig:
    """The FeatureConfig stored in the schema metadata of the dataset (or file) at ``uri``."""
    loc, files = parquet_files(uri)
    try:
        meta = pq.read_schema(files[0], filesystem=loc.fs).metadata or {}
    except OSError as exc:
        raise storage.StorageError(f"cannot read the Parquet schema of {files[0]} under {loc.uri}: {exc}") from exc
    raw = meta.get(FEATURES_KEY.encode())
    if raw is None:
        raise ConfigError(f"{files[0]} has no {FEATURES_KEY!r} in its schema metadata: not written by jobs.preprocess?")
    try:
        return from_json(FeatureConfig, raw.decode()).validate()
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{files[0]}: bad {FEATURES_KEY!r} metadata: {exc}") from exc


def check_clips(uri: str) -> int:
    """Read every clip of the dataset at ``uri`` once, on the driver, and refuse (naming the file and
    clip) a spectrogram of another shape than the dataset's features, a digit outside 0-9 or a value
    that is not finite: in the workers each would fail every retry of a run. Returns the clip count."""
    cfg = read_feature_config(uri)
    loc, files = parquet_files(uri)
    count = 0
    for path in files:
        try:
            reader = pq.ParquetFile(path, filesystem=loc.fs)
            spec_type = reader.schema_arrow.field("spectrogram").type
            shape = tuple(getattr(spec_type, "shape", ()))
            if shape != cfg.shape:
                raise ConfigError(f"{path}: spectrograms of shape {shape}, the dataset's features make {cfg.shape}")
            for batch in reader.iter_batches(batch_size=512, columns=["id", "digit", "spectrogram"]):
                _check_batch(path, batch)
                count += batch.num_rows
        except (OSError, KeyError) as exc:
            raise storage.StorageError(f"cannot read the clips of {path} under {loc.uri}: {exc}") from exc
    return count


def _check_batch(path: str, batch: pa.RecordBatch) -> None:
    ids, digits = batch.column("id").to_pylist(), batch.column("digit").to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((digits < 0) | (digits >= N_DIGITS))
    if bad.size:
        raise ConfigError(f"{path}: clip {ids[bad[0]]} has digit {digits[bad[0]]}; digits are 0-9")
    values = batch.column("spectrogram").storage.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise ConfigError(f"{path}: clip {ids[bad[0]]} has a spectrogram with NaN or infinite values")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r}; choose from {list(SPLITS)} or None for all rows")


def read_split(uri: str, split: str | None, columns: Sequence[str] | None = None) -> Any:
    """A lazy ``ray.data.Dataset`` of one split (``None``: all rows). The spectrogram column
    arrives in numpy batches as ``(batch, n_bins, n_frames)`` float32."""
    import ray.data
    from ray.data.expressions import col

    _check_split(split)
    loc, files = parquet_files(uri)
    ds = ray.data.read_parquet(files, filesystem=loc.fs)
    if split is not None:
        ds = ds.filter(expr=col("split") == split)
    return ds.select_columns(list(columns)) if columns else ds


def _read_file_split(
    path: str, fs: pafs.FileSystem, split: str | None, columns: list[str] | None, without_speaker: str = ""
) -> pa.Table:
    import ray.data  # noqa: F401  registers Ray's tensor types with pyarrow, for the spectrogram column

    filters = [] if split is None else [("split", "==", split)]
    if without_speaker:
        filters.append(("speaker", "!=", without_speaker))
    return pq.read_table(path, filesystem=fs, columns=columns, filters=filters or None)


def column_names(uri: str) -> list[str]:
    """The columns of the dataset at ``uri`` (its first part's schema)."""
    loc, files = parquet_files(uri)
    return pq.read_schema(files[0], filesystem=loc.fs).names


def has_column(uri: str, name: str) -> bool:
    """Whether the dataset at ``uri`` has a column ``name``."""
    return name in column_names(uri)


def check_columns(uri: str, columns: Sequence[str]) -> None:
    """Raise ConfigError naming the first of ``columns`` the dataset at ``uri`` lacks."""
    names = column_names(uri)
    for name in columns:
        if name not in names:
            what = " (the pitch tracks a model with ModelConfig.pitch learns)" if name == "f0" else ""
            raise ConfigError(f"dataset {uri} has no {name!r} column{what}: preprocess its recordings again")


def materialize_split(
    uri: str, split: str | None, columns: Sequence[str] | None = None, without_speaker: str = ""
) -> Any:
    """One split as a materialised ``ray.data.Dataset``, each Parquet file read (and filtered) by a Ray
    task wherever Ray places it, its rows staying in that node's object store.

    The same rows and types as ``read_split(...).materialize()`` (in file order; training sorts by id),
    without Ray Data's start-up for a read this small. ``without_speaker``: leave that speaker's clips out.
    """
    import ray
    from ray.data import from_arrow_refs

    _check_split(split)
    loc, files = parquet_files(uri)
    read = ray.remote(_read_file_split)
    refs = [read.remote(f, loc.fs, split, list(columns) if columns else None, without_speaker) for f in files]
    try:
        return from_arrow_refs(refs)  # type: ignore[arg-type]  # Ray: .remote() and this disagree on ObjectRef's class
    except ray.exceptions.RayTaskError as exc:
        raise storage.StorageError(f"cannot read the {split or 'whole'} split of {loc.uri}: {exc.cause}") from exc


def load_split_numpy(uri: str, split: str | None, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """One split as numpy arrays sorted by id, with pyarrow only (no Ray): for small data,
    tests and evaluation. ``spectrogram`` is ``(rows, n_bins, n_frames)`` float32."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    _check_split(split)
    loc, files = parquet_files(uri)
    wanted = list(columns) if columns else None
    dataset = pads.dataset(files, filesystem=loc.fs, format="parquet")
    read_cols = None if wanted is None else sorted(set(wanted) | {"id"}, key=dataset.schema.names.index)
    table = dataset.to_table(columns=read_cols, filter=None if split is None else pc.field("split") == split)
    table = table.sort_by("id")
    out = {}
    for name in wanted or table.column_names:
        col = table.column(name)
        if isinstance(col.type, pa.FixedShapeTensorType):
            n_rows = len(col)
            out[name] = (
                col.combine_chunks().to_numpy_ndarray()
                if n_rows
                else np.zeros((0, *col.type.shape), dtype=col.type.value_type.to_pandas_dtype())
            )
        else:
            out[name] = col.to_numpy()
    return out


def load_rejected(uri: str) -> list[dict[str, str]]:
    """The ``source``/``reason`` rows of the dataset's ``_rejected``, sorted by source. ``uri`` may also
    be a version folder that was not published (an extraction whose every input was rejected)."""
    folder = storage.resolve(storage.published(uri)).join(REJECTED_DIR)
    files = part_files(folder)
    if not files:
        raise storage.StorageError(f"no Parquet files in {folder.uri}")
    table = pa.concat_tables([pq.read_table(f, filesystem=folder.fs, schema=REJECTED_SCHEMA) for f in files])
    return sorted(table.to_pylist(), key=lambda r: r["source"])
