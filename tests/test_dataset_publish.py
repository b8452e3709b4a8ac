"""A dataset is published whole or not at all: interrupted, killed and concurrent extractions
(real ``python -m jobs.preprocess`` processes on the session's Ray, local folders and the S3
endpoint), readers that refuse anything unpublished, the file-name rule and short clips."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import soundfile as sf

from vae import dataset, storage
from vae.config import FeatureConfig, preset

REPO = Path(__file__).resolve().parents[1]
DEFAULT = preset(FeatureConfig, "default")
EARLIER = ("0_george_5", "1_jackson_0", "2_lucas_12", "3_theo_4", "4_yweweler_30", "5_george_49")


def _start_job(src: str, dst: str, ray_address: str, blocks: int) -> subprocess.Popen:
    """The job as a shell starts it: Ctrl-C at its default, whatever an earlier test in this process set
    (a child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.preprocess", "--input", src, "--out", dst, "--blocks", str(blocks)],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": ray_address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _parquet_files_under(uri: str) -> set[str]:
    loc = storage.resolve(uri)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError:
        return set()
    return {i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")}


def _snapshot(uri: str) -> dict:
    """What a reader of the dataset at ``uri`` gets: ids in order, row count, the summary it comes with."""
    ids = list(dataset.load_split_numpy(uri, None, columns=["id"])["id"])
    summary = storage.read_json(storage.join(storage.published(uri), dataset.SUMMARY_FILE))
    return {"ids": ids, "rows": len(ids), "summary": summary, "features": dataset.read_feature_config(uri)}


def _interrupt_mid_run(src: str, dst: str, ray_address: str, sig: int) -> subprocess.CompletedProcess:
    """Start the job, wait until it has written a new Parquet part under ``dst``, then send ``sig``."""
    before = _parquet_files_under(dst)
    proc = _start_job(src, dst, ray_address, blocks=100)
    deadline = time.monotonic() + 240
    while not (_parquet_files_under(dst) - before):
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(
                f"the job ended (or stalled) before writing a part: rc={proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
            )
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _link_takes(fsdd_dir: Path, dest: Path, takes) -> list[str]:
    """``dest`` with links to every FSDD clip of these takes; returns their ids."""
    dest.mkdir()
    for p in fsdd_dir.glob("*.wav"):
        if int(p.stem.rsplit("_", 1)[1]) in takes:
            os.symlink(p, dest / p.name)
    return sorted(p.stem for p in dest.glob("*.wav"))


@pytest.fixture
def earlier_src(fsdd_dir, tmp_path) -> Path:
    src = tmp_path / "earlier"
    src.mkdir()
    for stem in EARLIER:
        shutil.copy(fsdd_dir / f"{stem}.wav", src / f"{stem}.wav")
    return src


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_interrupted_or_killed_extraction_leaves_the_earlier_dataset_whole(
    where, ray_local, make_bucket, fsdd_dir, earlier_src, tmp_path
):
    dst = str(tmp_path / "features") if where == "local" else f"{make_bucket('fsdd-interrupt')}/features"
    dataset.extract(str(earlier_src), dst, DEFAULT, progress=None)
    earlier = _snapshot(dst)
    assert earlier["rows"] == len(EARLIER)

    later = tmp_path / "later"
    ids = _link_takes(fsdd_dir, later, range(10))  # 500 clips: 100 blocks of 5, so the run is caught part-way
    # SIGTERM is what `ray job stop` sends first; once is enough (it takes the SIGINT path).
    for sig in (signal.SIGINT, signal.SIGKILL) + ((signal.SIGTERM,) if where == "local" else ()):
        res = _interrupt_mid_run(str(later), dst, ray_local, sig)
        assert res.returncode != 0, f"{sig!r}: the job finished before the signal\n{res.stdout[-2000:]}"
        assert _snapshot(dst) == earlier, f"{sig!r} changed what readers get at {dst}"
        if sig != signal.SIGKILL:  # Ctrl-C is reported like every other failure: one line and a JSON error
            assert res.returncode == 130, res.stderr[-3000:]
            assert "interrupted" in json.loads(res.stdout.strip().splitlines()[-1])["error"]

    again = dataset.extract(str(later), dst, DEFAULT, progress=None)
    assert again.written == len(ids) and again.rejected == 0
    now = _snapshot(dst)
    assert now["ids"] == ids
    assert now["summary"]["run_id"] == again.run_id
    # What the interrupted runs left is gone: only the new version and the one before it remain.
    assert len(storage.list_versions(dst)) <= 2


@pytest.mark.slow
def test_two_extractions_into_one_output_at_once_one_wins_whole(ray_local, fsdd_dir, tmp_path):
    inputs = {name: _link_takes(fsdd_dir, tmp_path / name, takes) for name, takes in (("a", (0, 1)), ("b", (2, 3, 4)))}
    dst = str(tmp_path / "features")
    procs = {name: _start_job(str(tmp_path / name), dst, ray_local, blocks=10) for name in inputs}
    results = {name: p.communicate(timeout=600) + (p.returncode,) for name, p in procs.items()}

    winners = [name for name, (_, _, rc) in results.items() if rc == 0]
    assert winners, {n: r[1][-2000:] for n, r in results.items()}
    for out, err, rc in results.values():
        assert rc in (0, 1), err[-3000:]
        if rc:  # the loser says so in one line; it never publishes half a dataset
            assert json.loads(out.strip().splitlines()[-1])["error"]
    got = _snapshot(dst)
    matches = [name for name, ids in inputs.items() if got["ids"] == ids]
    assert len(matches) == 1, f"readers get {got['rows']} rows matching neither input whole"
    assert got["summary"]["written"] == got["rows"]


def _write_legacy(extracted: str, folder: Path) -> None:
    """The layout jobs.preprocess wrote before publishing existed: parts, _rejected/ and _summary.json in the folder itself."""
    shutil.copytree(storage.published(extracted), folder)
    summary = json.loads((folder / dataset.SUMMARY_FILE).read_text())
    summary.pop("parts", None)
    (folder / dataset.SUMMARY_FILE).write_text(json.dumps(summary))


def test_readers_read_only_a_published_dataset(ray_local, earlier_src, fsdd_dir, tmp_path):
    extracted = str(tmp_path / "features")
    dataset.extract(str(earlier_src), extracted, DEFAULT, progress=None)
    # A folder of today's layout, from an extraction that finished, is still read.
    legacy = tmp_path / "legacy"
    _write_legacy(extracted, legacy)
    assert list(dataset.load_split_numpy(str(legacy), None, columns=["id"])["id"]) == sorted(EARLIER)
    assert dataset.read_feature_config(str(legacy)) == DEFAULT
    assert dataset.read_split(str(legacy), None).count() == len(EARLIER)

    # The case: old parts, a part of an interrupted later run, the old summary.
    mixed = tmp_path / "mixed"
    _write_legacy(extracted, mixed)
    first = sorted(mixed.glob("part-*.parquet"))[0]
    shutil.copy(first, mixed / first.name.replace(first.name.split("-")[1], "0123456789ab"))
    # Parts and no summary at all (killed before it), and an empty folder.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(first, bare / first.name)
    (tmp_path / "empty").mkdir()
    for folder, why in ((mixed, "interrupted"), (bare, "interrupted"), (tmp_path / "empty", "no published dataset")):
        for read in (
            lambda u: dataset.load_split_numpy(u, "train"),
            lambda u: dataset.read_split(u, "train"),
            dataset.read_feature_config,
        ):
            with pytest.raises(storage.StorageError, match=why) as info:
                read(str(folder))
            assert str(folder) in str(info.value)

    # The jobs say the same, in one line, before starting anything.
    from jobs import train, tune

    for main, extra in (
        (train.main, ["--out", str(tmp_path / "runs"), "--name", "r"]),
        (
            tune.main,
            ["--out", str(tmp_path / "runs"), "--name", "t", "--space", str(REPO / "tune_spaces" / "smoke.yaml")],
        ),
    ):
        assert main(["--data", str(mixed), *extra]) == 1
    assert not (tmp_path / "runs" / "t").exists(), "a sweep that could not start left files behind"


def test_file_names_accept_letters_digits_and_hyphens_in_speakers():
    assert dataset.parse_name("0_spk01_3.wav").speaker == "spk01"
    assert dataset.parse_name("s3://b/x/0_anna-b_3.wav") == dataset.Labels("0_anna-b_3", 0, "anna-b", 3, "test")
    assert [dataset.parse_name(f"4_george{i}_12.wav").speaker for i in range(1, 7)] == [
        f"george{i}" for i in range(1, 7)
    ]
    for bad in (
        "0_-anna_3.wav",
        "0_anna b_3.wav",
        "0_anna.b_3.wav",
        "0_<b>_3.wav",
        "0_a%2Fb_3.wav",
        f"0_{'a' * 65}_3.wav",
        "0_spk_01_3.wav",
        "0__3.wav",
        "10_spk01_3.wav",
    ):
        with pytest.raises(ValueError, match="does not match"):
            dataset.parse_name(bad)


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    n = max(1, int(round(seconds * 8000)))
    sf.write(buf, (0.5 * np.cos(np.arange(n) * 0.3)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_clips_shorter_than_the_minimum_are_rejected_with_a_reason(ray_local, fsdd_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "1_theo_5.wav").write_bytes(_wav(1 / 8000))  # one sample
    (src / "2_theo_5.wav").write_bytes(_wav(0.010))
    shutil.copy(fsdd_dir / "6_yweweler_3.wav", src / "6_yweweler_3.wav")  # the shortest FSDD clip, 0.14 s
    summary = dataset.extract(str(src), str(tmp_path / "out"), DEFAULT, progress=None)
    assert (summary.written, summary.rejected) == (1, 2)
    reasons = {os.path.basename(r["source"]): r["reason"] for r in dataset.load_rejected(str(tmp_path / "out"))}
    assert set(reasons) == {"1_theo_5.wav", "2_theo_5.wav"}
    assert all("too short" in r and "min_clip_seconds" in r for r in reasons.values()), reasons
    assert list(dataset.load_split_numpy(str(tmp_path / "out"), None, columns=["id"])["id"]) == ["6_yweweler_3"]


def test_the_pipeline_reuses_only_a_published_dataset(ray_local, earlier_src, tmp_path, vae_log):
    from vae.pipeline import extract_features

    out = extract_features(str(earlier_src), str(tmp_path / "s"), "default", DEFAULT)
    assert "extracting" in vae_log()
    assert extract_features(str(earlier_src), str(tmp_path / "s"), "default", DEFAULT) == out
    assert "reusing" in vae_log()

    # The same folder holding what an interrupted extraction of the old layout left: extracted again.
    extracted = storage.published(out)
    mixed = tmp_path / "mixed"
    _write_legacy(out, mixed)
    first = sorted(mixed.glob("part-*.parquet"))[0]
    shutil.copy(first, mixed / first.name.replace(first.name.split("-")[1], "0123456789ab"))
    shutil.rmtree(out)
    shutil.copytree(mixed, out)
    assert extract_features(str(earlier_src), str(tmp_path / "s"), "default", DEFAULT) == out
    said = vae_log()
    assert "nothing to reuse" in said and "interrupted" in said
    assert list(dataset.load_split_numpy(out, None, columns=["id"])["id"]) == sorted(EARLIER)
    assert not list(Path(out).glob("part-*.parquet")), "the old layout's parts are gone once a version is published"
    assert extracted != storage.published(out)
