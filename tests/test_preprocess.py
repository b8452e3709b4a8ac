"""The extraction job on real FSDD clips, real local Ray, Parquet on disk and a real HTTP S3 endpoint."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from ray_processes import end_processes_mentioning, pids_mentioning

from vae import dataset, storage
from vae import features as F
from vae.config import FeatureConfig, preset, to_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT = preset(FeatureConfig, "default")
GOOD = (
    "0_george_5",
    "1_jackson_0",
    "2_lucas_12",
    "3_theo_4",
    "4_yweweler_30",
    "5_george_49",
    "6_jackson_3",
    "7_lucas_8",
)


def _run_job(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.preprocess", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy_good(fsdd_dir: Path, dest: Path, stems=GOOD) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(fsdd_dir / f"{stem}.wav", dest / f"{stem}.wav")


def _make_bad_inputs(fsdd_dir: Path, dest: Path) -> dict[str, str]:
    """Write every kind of bad input into ``dest``; returns file name -> expected reason fragment."""
    real = (fsdd_dir / "5_lucas_9.wav").read_bytes()
    corrupt = bytearray((fsdd_dir / "7_george_2.wav").read_bytes())
    corrupt[12:16] = b"xxxx"  # the fmt chunk is gone
    silent = io.BytesIO()
    sf.write(silent, np.zeros(4000, np.float32), 8000, format="WAV", subtype="PCM_16")
    files = {
        "5_lucas_9.wav": (real[: len(real) // 3], "truncated"),
        "7_george_2.wav": (bytes(corrupt), "not decodable"),
        "8_theo_3.wav": (b"", "empty file"),
        "6_theo_3.wav": (b"digit,speaker\n6,theo\n" * 20, "not decodable"),
        "0_george_1.wav": (silent.getvalue(), "silent"),
        "hello.wav": (real, "does not match"),
        "10_george_1.wav": (real, "does not match"),
    }
    for name, (data, _) in files.items():
        (dest / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


def test_parse_name_and_split():
    assert dataset.parse_name("/x/7_jackson_32.wav") == dataset.Labels("7_jackson_32", 7, "jackson", 32, "train")
    assert dataset.parse_name("s3://b/p/0_theo_0.WAV").split == "test"
    assert [dataset.parse_name(f"1_lucas_{t}.wav").split for t in (0, 4, 5, 49)] == ["test", "test", "train", "train"]
    for bad in ("hello.wav", "10_george_1.wav", "1_george.wav", "1_george_x.wav", "1__2.wav", "1_george_1.mp3"):
        with pytest.raises(ValueError, match="does not match"):
            dataset.parse_name(bad)


def test_extraction_path_imports_no_heavy_library(fsdd_dir):
    """The job's modules and a block's featurisation (what every Ray worker runs) import neither
    TensorFlow nor matplotlib: seconds of start-up per process. (librosa comes with pYIN, which tracks pitch.)"""
    script = textwrap.dedent(
        """
        import json, sys
        import jobs.preprocess
        from vae import dataset, storage
        from vae.config import FeatureConfig, preset
        files = sys.argv[1:]
        for name in ("seed", "default"):
            rows, rejected = dataset.extract_rows(dataset.input_items(files), storage.resolve(files[0]).fs, preset(FeatureConfig, name))
            assert len(rows) == len(files) and not rejected, rejected
        heavy = ("tensorflow", "keras", "matplotlib")
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
        """
    )
    files = [str(fsdd_dir / f"{stem}.wav") for stem in GOOD[:3]]
    out = subprocess.run([sys.executable, "-c", script, *files], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_small_parquet_reads_back_with_plain_pyarrow_and_pandas(small_parquet):
    """In a fresh interpreter that never imports Ray: labels, splits, tensor shape, feature metadata."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
        path = sys.argv[1]
        t = pq.read_table(path)
        spec_type = t.schema.field("spectrogram").type
        specs = t.column("spectrogram").combine_chunks().to_numpy_ndarray()
        df = pd.read_parquet(path)
        flat = np.stack(df["spectrogram"].to_numpy())
        labels_ok = all(
            f"{d}_{s}_{k}" == i and sp == ("test" if k < 5 else "train")
            for i, d, s, k, sp in zip(df["id"], df["digit"], df["speaker"], df["take"], df["split"])
        )
        print(json.dumps(dict(
            ray_imported="ray" in sys.modules,
            rows=t.num_rows,
            columns=t.column_names,
            spec_type=str(spec_type.extension_name), spec_shape=list(spec_type.shape), spec_dtype=str(specs.dtype),
            specs_shape=list(specs.shape), range=[float(specs.min()), float(specs.max())],
            pandas_row_dtype=str(df["spectrogram"].iloc[0].dtype), pandas_reshaped_equal=bool(
                np.array_equal(flat.reshape(specs.shape), specs)),
            labels_ok=labels_ok, splits=df.split.value_counts().to_dict(),
            digits=sorted(set(df.digit.tolist())), speakers=sorted(set(df.speaker)),
            meta=t.schema.metadata[b"fsdd_vae.features"].decode(),
        )))
        """
    )
    # Plain readers read the published version folder; the dataset folder itself fails loudly, never half.
    out = subprocess.run(
        [sys.executable, "-c", script, storage.published(small_parquet)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ray_imported"] is False
    assert got["rows"] == 250
    assert got["columns"] == [
        "id",
        "digit",
        "speaker",
        "take",
        "split",
        "spectrogram",
        "f0",
        "source",
        "source_sample_rate",
        "duration_s",
        "db_min",
        "db_max",
    ]
    assert got["spec_type"] == "arrow.fixed_shape_tensor" and got["spec_shape"] == [128, 96]
    assert got["spec_dtype"] == "float32" and got["specs_shape"] == [250, 128, 96]
    assert 0.0 <= got["range"][0] < got["range"][1] <= 1.0
    assert got["pandas_row_dtype"] == "float32" and got["pandas_reshaped_equal"]
    assert got["labels_ok"] and got["splits"] == {"train": 150, "test": 100}
    assert got["digits"] == list(range(10)) and got["speakers"] == ["george", "jackson", "lucas", "theo", "yweweler"]
    assert got["meta"] == to_json(DEFAULT)


def test_parts_skip_dictionary_and_statistics_for_spectrograms_only(small_parquet):
    """The writer's options (vae.dataset.parquet_options) as they land in the files: the tensor column
    plain-encoded without min/max, the label columns still dictionary-encoded with statistics."""
    parts = list(Path(storage.published(small_parquet)).glob("part-*.parquet"))
    assert parts
    for part in parts:
        meta = pq.ParquetFile(part).metadata
        for g in range(meta.num_row_groups):
            columns = {
                meta.row_group(g).column(c).path_in_schema: meta.row_group(g).column(c) for c in range(meta.num_columns)
            }
            spec = [c for path, c in columns.items() if path.startswith("spectrogram.")]
            assert len(spec) == 1 and not spec[0].is_stats_set, part
            assert not any("DICTIONARY" in e for e in spec[0].encodings), (part, spec[0].encodings)
            assert columns["speaker"].is_stats_set and any("DICTIONARY" in e for e in columns["speaker"].encodings)
            assert columns["digit"].statistics.min >= 0 and columns["digit"].statistics.max <= 9


def test_small_parquet_library_readers(small_parquet, fsdd_dir):
    assert dataset.read_feature_config(small_parquet) == DEFAULT
    test = dataset.load_split_numpy(small_parquet, "test")
    assert test["spectrogram"].shape == (100, 128, 96) and test["spectrogram"].dtype == np.float32
    assert set(test["take"]) == {0, 1} and list(test["id"]) == sorted(test["id"])
    # The stored rows are exactly what the features module computes for the source file.
    for i in (0, 57):
        clip = F.decode_audio(Path(test["source"][i]).read_bytes(), DEFAULT)
        spec, db_min, db_max = F.waveform_to_spectrogram(clip.waveform, DEFAULT)
        np.testing.assert_array_equal(test["spectrogram"][i], spec)
        assert (test["db_min"][i], test["db_max"][i]) == (db_min, db_max)
        assert test["source_sample_rate"][i] == 8000 and test["duration_s"][i] == pytest.approx(clip.duration_s)
        assert Path(test["source"][i]).parent == fsdd_dir
    train = dataset.load_split_numpy(small_parquet, "train", columns=["digit", "spectrogram"])
    assert list(train) == ["digit", "spectrogram"] and len(train["digit"]) == 150

    ds = dataset.read_split(small_parquet, "train", columns=["spectrogram", "digit"])
    batches = list(ds.iter_batches(batch_size=64, batch_format="numpy"))
    assert sum(len(b["digit"]) for b in batches) == 150
    assert {b["spectrogram"].shape[1:] for b in batches} == {(128, 96)} and batches[0][
        "spectrogram"
    ].dtype == np.float32
    assert np.isclose(sum(float(b["spectrogram"].sum()) for b in batches), float(train["spectrogram"].sum()), rtol=1e-6)

    # What training reads: the same rows with the same types as Ray Data's read (training sorts them by id).
    for split in ("train", "test"):
        fast = dataset.materialize_split(small_parquet, split, ["id", "digit", "spectrogram"])
        slow = dataset.read_split(small_parquet, split, ["id", "digit", "spectrogram"]).materialize()
        assert fast.schema() == slow.schema()
        a, b = (d.to_pandas().sort_values("id", ignore_index=True) for d in (fast, slow))
        assert list(a["id"]) == list(b["id"]) and len(a) == (150 if split == "train" else 100)
        np.testing.assert_array_equal(np.stack(a["spectrogram"]), np.stack(b["spectrogram"]))

    assert dataset.load_rejected(small_parquet) == []
    summary = storage.read_json(storage.join(storage.published(small_parquet), dataset.SUMMARY_FILE))
    assert (summary["written"], summary["rejected"], summary["train"], summary["test"]) == (250, 0, 150, 100)
    with pytest.raises(ValueError, match="validation"):
        dataset.load_split_numpy(small_parquet, "validation")


def test_every_bad_input_is_rejected_with_its_reason(ray_local, fsdd_dir, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    _copy_good(fsdd_dir, src)
    expected = _make_bad_inputs(fsdd_dir, src)
    # Other rates and stereo are converted, not rejected.
    y, _ = sf.read(fsdd_dir / "9_theo_20.wav", dtype="float32")
    y44 = F.resample(y, 8000, 44100)
    sf.write(src / "9_theo_20.wav", np.stack([y44, 0.5 * y44], axis=1), 44100, subtype="PCM_16")
    (src / "sub").mkdir()
    shutil.copy(fsdd_dir / "3_theo_4.wav", src / "sub" / "3_theo_4.wav")
    expected["sub/3_theo_4.wav"] = "duplicate id"

    summary = dataset.extract(str(src), str(dst), DEFAULT, progress=None)

    assert (summary.written, summary.rejected) == (len(GOOD) + 1, len(expected))
    assert summary.dataset == storage.published(str(dst))
    clips = pq.read_table(summary.dataset).to_pandas()
    assert sorted(clips.id) == sorted([*GOOD, "9_theo_20"])
    assert clips.set_index("id").loc["9_theo_20", "source_sample_rate"] == 44100
    rejected = pq.read_table(os.path.join(summary.dataset, "_rejected")).to_pylist()
    assert sorted(r["source"] for r in rejected) == sorted(str(src / name) for name in expected)
    for r in rejected:
        name = os.path.relpath(r["source"], src)
        assert expected[name] in r["reason"], f"{name}: {r['reason']!r}"

    # A second run on fewer inputs replaces the first run's files, never mixes with them.
    for name in expected:
        (src / name).unlink()
    again = dataset.extract(str(src), str(dst), DEFAULT, progress=None)
    assert (again.written, again.rejected) == (len(GOOD) + 1, 0)
    assert pq.read_table(again.dataset).num_rows == len(GOOD) + 1
    assert dataset.load_rejected(str(dst)) == []
    assert all(again.run_id in f for f in os.listdir(again.dataset) if f.endswith(".parquet"))
    # The first run's version stays for readers still on it, and is not what readers of dst get.
    assert storage.list_versions(str(dst)) == sorted(
        [os.path.basename(summary.dataset), os.path.basename(again.dataset)]
    )


def test_cli_on_a_slice(ray_local, fsdd_dir, tmp_path):
    """The real command line, joining the session's Ray through RAY_ADDRESS as under `ray job submit`."""
    src, dst = tmp_path / "src", tmp_path / "out"
    _copy_good(fsdd_dir, src)
    (src / "6_theo_3.wav").write_bytes(b"not audio")
    res = _run_job(["--input", str(src), "--out", str(dst)], env={"RAY_ADDRESS": ray_local})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[-2] == f"{len(GOOD)} clips written, 1 rejected"
    assert any(line.startswith("extract: ") for line in lines), "no progress lines"
    result = json.loads(lines[-1])
    assert (result["output"], result["written"], result["rejected"]) == (str(dst), len(GOOD), 1)
    assert pq.read_table(result["dataset"]).num_rows == len(GOOD)
    assert dataset.parquet_files(result["output"])[0].uri == result["dataset"]


@pytest.mark.slow
def test_cli_with_its_own_local_instance_leaves_no_ray_process_behind(fsdd_dir, tmp_path):
    """As on a laptop (no RAY_ADDRESS): the job starts a local instance, warms its workers, shuts it
    down before its last lines and exits without the interpreter's teardown; nothing of that instance
    outlives it and its output is whole."""
    src, dst = tmp_path / "src", tmp_path / "out"
    _copy_good(fsdd_dir, src)
    temp_dir = tempfile.mkdtemp(prefix="rp", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        res = _run_job(
            ["--input", str(src), "--out", str(dst), "--num-cpus", "2"],
            env={"RAY_TMPDIR": temp_dir, "RAY_ADDRESS": ""},
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert list(Path(temp_dir, "ray").glob("session_2*")), "the job did not start its own instance"
        deadline = time.monotonic() + 5
        while pids_mentioning(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids_mentioning(temp_dir) == [], "the job's local Ray instance outlived it"
        assert "Traceback" not in res.stderr and "Unhandled error" not in res.stderr, res.stderr[-3000:]
        lines = res.stdout.strip().splitlines()
        assert lines[-2] == f"{len(GOOD)} clips written, 0 rejected"
        result = json.loads(lines[-1])
        assert pq.read_table(result["dataset"]).num_rows == len(GOOD)
    finally:
        end_processes_mentioning(temp_dir, grace_s=0)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_cli_fails_clearly(ray_local, fsdd_dir, tmp_path):
    missing = tmp_path / "no-such-dir"
    res = _run_job(["--input", str(missing), "--out", str(tmp_path / "out")])
    assert res.returncode != 0 and f"{missing} does not exist" in res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["error"]

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "1_theo_1.wav").write_bytes(b"")
    res = _run_job(["--input", str(only_bad), "--out", str(tmp_path / "out")], env={"RAY_ADDRESS": ray_local})
    assert res.returncode != 0 and "nothing could be written" in res.stderr
    assert "0 clips written, 1 rejected" in res.stdout
    assert not (tmp_path / "out" / storage.PUBLISHED_POINTER).exists(), "a dataset of no clips was published"
    (version,) = storage.list_versions(str(tmp_path / "out"))  # kept, unpublished, for its reasons
    assert storage.join(str(tmp_path / "out"), version, "_rejected") in res.stderr
    rejected = dataset.load_rejected(storage.join(str(tmp_path / "out"), version))
    assert rejected == [{"source": str(only_bad / "1_theo_1.wav"), "reason": "empty file"}]


def test_unreachable_s3_fails_fast_naming_the_path(tmp_path, fsdd_dir, free_port):
    dead = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }
    res = _run_job(["--input", "s3://fsdd/recordings", "--out", str(tmp_path / "out")], env=dead)
    assert res.returncode != 0 and "s3://fsdd/recordings" in res.stderr
    _copy_good(fsdd_dir, tmp_path / "src", GOOD[:1])
    res = _run_job(["--input", str(tmp_path / "src"), "--out", "s3://fsdd/features"], env=dead)
    assert res.returncode != 0 and "output s3://fsdd/features" in res.stderr


def test_s3_in_and_out_gives_the_same_rows(ray_local, make_bucket, fsdd_dir, tmp_path):
    bucket = make_bucket("fsdd-extract")
    src = tmp_path / "src"
    _copy_good(fsdd_dir, src)
    (src / "hello.wav").write_bytes((fsdd_dir / "1_theo_1.wav").read_bytes())
    storage.copy_tree(str(src), f"{bucket}/recordings")

    local = dataset.extract(str(src), str(tmp_path / "out"), DEFAULT, progress=None)
    remote = dataset.extract(f"{bucket}/recordings", f"{bucket}/features", DEFAULT, progress=None)

    assert (remote.written, remote.rejected) == (local.written, local.rejected) == (len(GOOD), 1)
    assert storage.exists(f"{bucket}/features/{storage.PUBLISHED_POINTER}")
    assert storage.exists(storage.join(remote.dataset, "_summary.json"))
    a = dataset.load_split_numpy(str(tmp_path / "out"), None)
    b = dataset.load_split_numpy(f"{bucket}/features", None)
    assert b["source"][0].startswith(f"{bucket}/recordings/")
    for name in a:
        if name == "source":
            assert [os.path.basename(s) for s in a[name]] == [s.rsplit("/", 1)[1] for s in b[name]]
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert dataset.read_feature_config(f"{bucket}/features") == DEFAULT
    assert dataset.load_rejected(f"{bucket}/features")[0]["source"] == f"{bucket}/recordings/hello.wav"
    assert dataset.read_split(f"{bucket}/features", "train").count() == int((a["split"] == "train").sum())
    assert dataset.materialize_split(f"{bucket}/features", "test", ["id"]).count() == int((a["split"] == "test").sum())


def test_init_ray_is_idempotent(ray_local):
    import ray

    from vae.raysetup import init_ray

    assert init_ray(num_cpus=1) is False  # already initialised: nothing restarted, resources unchanged
    assert ray.get_runtime_context().gcs_address == ray_local
    assert ray.cluster_resources()["CPU"] == 4


def test_warm_workers_import_the_modules_in_one_task_per_cpu_or_fewer(ray_local):
    import ray

    from vae.raysetup import warm_workers

    refs = warm_workers(("vae.dataset", "soxr"))
    assert len(refs) == ray.cluster_resources()["CPU"]
    assert ray.get(refs) == [["vae.dataset", "soxr"]] * len(refs)
    assert len(warm_workers(("vae.dataset",), tasks=1)) == 1
    with pytest.raises(ray.exceptions.RayTaskError, match="no_such_module"):
        ray.get(warm_workers(("no_such_module",), tasks=1))
