"""The per-run report of a tiny VAE trained by the real Ray Train path: complete, relative, renders in Chromium."""

from __future__ import annotations

import json
import os
import shutil

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
from chromium import chromium

from jobs import evaluate as evaluate_job
from vae import checkpoint, storage
from vae.config import EvalConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.evaluation.run import METRICS_FILE, evaluate
from vae.reports.html import broken_links, links
from vae.reports.run_report import write

pytestmark = pytest.mark.slow
HEADLINE = ("digit_accuracy", "inception_score", "frechet_distance", "recon_lsd_db", "recon_mse")


@pytest.fixture(scope="module")
def tiny_checkpoint(ray_local, small_parquet, tmp_path_factory) -> str:
    """Two epochs of the ``tiny`` model with a mixture prior, by ``vae.training.fit`` (Ray Train, one worker)."""
    from vae.training import fit

    cfg = RunConfig(
        model=preset(ModelConfig, "tiny"),
        prior=PriorConfig(kind="mixture", components=10),
        train=TrainConfig(epochs=2, batch_size=16),
    )
    result = fit(cfg, small_parquet, str(tmp_path_factory.mktemp("runs")), "tiny")
    return result.latest_checkpoint


@pytest.fixture(scope="module")
def evaluation(tiny_checkpoint, small_parquet, recogniser_dir):
    return evaluate(
        checkpoint.load(tiny_checkpoint), small_parquet, recogniser_dir, EvalConfig(n_per_digit=3, n_unconditional=30)
    )


@pytest.fixture(scope="module")
def report_dir(evaluation, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("report") / "run")
    write(evaluation, out)
    return out


def _files(folder: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}


def test_metrics_json_holds_every_metric_and_its_floor(report_dir, evaluation):
    saved = json.loads(open(os.path.join(report_dir, METRICS_FILE)).read())
    for name in HEADLINE:
        assert np.isfinite(saved[name]) and np.isfinite(saved[f"{name}_floor"]), name
    assert saved["test_clips"] == 100 and saved["conditional_samples"] == 30
    # Inception score and Frechet distance are means over draws of n_unconditional samples (3 by default).
    assert saved["unconditional_samples"] == 3 * 30 and len(saved["frechet_distance_draws"]) == 3
    assert saved["frechet_distance"] == pytest.approx(np.mean(saved["frechet_distance_draws"]))
    # Other real recordings (the train split's) in draws as large: real clips, so nearer than the 2-epoch model.
    assert 0 < saved["frechet_distance_real"] < saved["frechet_distance"]
    assert 0 <= saved["digit_accuracy"] <= 1 and 1 <= saved["inception_score"] <= 10
    p = saved["digit_accuracy"]
    assert saved["digit_accuracy_se"] == pytest.approx(np.sqrt(p * (1 - p) / saved["conditional_samples"]))
    # The vocoder floor is what real clips keep through Griffin-Lim: better than an untrained model.
    assert saved["digit_accuracy_floor"] >= 0.9 and saved["recon_lsd_db_floor"] < saved["recon_lsd_db"]
    assert 0 <= saved["component_purity"] <= 1
    # The voice metrics, on voicing_clips (60) of the 100 test clips and of the 30 samples.
    assert (saved["voice_clips"], saved["voicing_samples_clips"]) == (60, 30)
    for name in ("voicing_recon", "voicing_samples", "voicing_real", "voicing_floor"):
        assert 0 <= saved[name] <= 1, name
    assert 1 <= saved["pesq_nb"] < saved["pesq_nb_floor"] <= 4.6
    assert saved["checkpoint"] == evaluation.checkpoint and saved["epoch"] == 2


def test_the_sweep_hears_the_same_digit_accuracy_as_the_report(tiny_checkpoint, recogniser_dir, evaluation):
    from vae import checkpoint
    from vae.evaluation import recogniser
    from vae.evaluation.evaluators.samples import sample_accuracy

    rec = recogniser.load(recogniser_dir)
    # What a sweep's Train worker ranks a checkpoint by: the folder it has just written, around its model in memory.
    in_worker = checkpoint.in_memory(tiny_checkpoint, checkpoint.load(tiny_checkpoint).model)
    assert sample_accuracy(in_worker, rec, evaluation.config.n_per_digit) == evaluation.metrics["digit_accuracy"]


def test_report_contains_every_image_and_audio_it_references(report_dir, evaluation):
    assert broken_links(report_dir) == []
    html = open(os.path.join(report_dir, "index.html"), encoding="utf-8").read()
    refs = links(html)
    images = [r for r in refs if r.endswith(".png")]
    sounds = [r for r in refs if r.endswith(".wav")]
    assert len(refs) == len(images) + len(sounds), "only PNG and WAV files are referenced"
    # Per digit: 3 real, 3 reconstructed, 3 generated clips, each an image and a player.
    assert len(sounds) == 10 * 3 * 3 and len([i for i in images if i.startswith("clips/")]) == 90
    for plot in (
        "waveforms",
        "curves",
        "gradient_norms",
        "latent_pca",
        "latent_tsne",
        "components",
        "confusion",
        "digit_accuracy",
    ):
        assert f"plots/{plot}.png" in images, plot
    for name in (
        "Mixture components",
        "t-SNE",
        "Training curves",
        "vocoder floor",
        "voicing_samples",
        "Voicing and PESQ",
    ):
        assert name in html, name
    # Everything in the folder is referenced (no stray files), and every file is what it says.
    assert _files(report_dir) == set(refs) | {"index.html", METRICS_FILE}
    for ref in images:
        img = matplotlib.image.imread(os.path.join(report_dir, ref))
        assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10, ref
    sr = evaluation.features.sample_rate
    for ref in sounds:
        y, rate = sf.read(os.path.join(report_dir, ref))
        assert rate == sr and len(y) == evaluation.features.n_samples and np.isfinite(y).all(), ref


def test_report_folder_works_when_moved(report_dir, tmp_path):
    moved = tmp_path / "copied"
    shutil.copytree(report_dir, moved)
    assert broken_links(str(moved)) == []


LAYOUT = """(() => {
  const box = (e) => e.getBoundingClientRect();
  return {
    headline: (document.getElementById('headline') || {}).textContent || null,
    header: [...document.querySelectorAll('h1, p.sub')].map((e) => e.textContent).join(' | '),
    images: [...document.querySelectorAll('img')].map((e) => ({src: e.getAttribute('src'), natural: e.naturalWidth,
      ratio: e.naturalWidth / e.naturalHeight, shown: box(e).width / box(e).height})),
    audios: [...document.querySelectorAll('audio')].map((e) => ({width: box(e).width, height: box(e).height})),
    scrollWidth: document.documentElement.scrollWidth,
  };
})()"""


def _laid_out(tools, width: int, shot) -> dict:
    """The report laid out ``width`` px wide, every image loaded, its screenshot at ``shot``."""
    tools.width(width)
    tools.wait_for("document.readyState === 'complete' && [...document.images].every((i) => i.complete)")
    tools.screenshot(shot)
    return tools.eval(LAYOUT)


def test_report_reads_well_in_headless_chromium_at_1280_and_390_px(report_dir, evaluation, tmp_path):
    """Screenshots of the report at 1280 and 390 px are left in tmp_path (report-1280.png, report-390.png)."""
    with chromium("file://" + os.path.join(report_dir, "index.html"), tmp_path / "chromium-profile") as tools:
        wide = _laid_out(tools, 1280, tmp_path / "report-1280.png")
        narrow = _laid_out(tools, 390, tmp_path / "report-390.png")
    assert "heard as the digit" in (wide["headline"] or "").lower()
    assert "/tmp" not in wide["header"] and evaluation.checkpoint not in wide["header"], wide["header"]
    for img in wide["images"]:
        assert img["natural"] > 0, img["src"]
        assert img["shown"] == pytest.approx(img["ratio"], rel=0.05), img
    assert wide["audios"] and all(a["height"] >= 32 and a["width"] >= 150 for a in wide["audios"]), wide["audios"][:3]
    assert narrow["scrollWidth"] <= 390 + 1
    pixels = matplotlib.image.imread(str(tmp_path / "report-1280.png"))[..., :3]
    assert pixels.shape[1] == 1280 and pixels.std() > 0.1  # not blank


def test_report_published_to_s3_has_the_same_files(evaluation, report_dir, make_bucket):
    uri = make_bucket("reports") + "/tiny"
    write(evaluation, uri)
    assert {rel for rel, _ in storage.walk_files(uri)} == _files(report_dir)
    assert storage.read_json(storage.join(uri, METRICS_FILE))["recon_mse"] == pytest.approx(
        evaluation.metrics["recon_mse"]
    )


def test_evaluate_job_with_unseen_voices_prints_json_last(
    tiny_checkpoint, small_parquet, recogniser_dir, fsdd_dir, tmp_path, capsys
):
    wavs = tmp_path / "voices"
    wavs.mkdir()
    for name in ("3_theo_12.wav", "7_lucas_20.wav"):
        shutil.copy(fsdd_dir / name, wavs / name)
    (wavs / "broken.wav").write_bytes(b"RIFF not really a wav")
    out = tmp_path / "eval"
    args = [
        "--checkpoint",
        tiny_checkpoint,
        "--data",
        small_parquet,
        "--out",
        str(out),
        "--recogniser",
        recogniser_dir,
        "--n-per-digit",
        "2",
        "--n-unconditional",
        "10",
        "--wavs",
        str(wavs),
    ]
    assert evaluate_job.main(args) == 0
    stdout = capsys.readouterr().out
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["report"] == str(out / "index.html") and os.path.exists(last["report"])
    saved = json.loads((out / METRICS_FILE).read_text())
    for name in HEADLINE:
        assert last[name] == pytest.approx(saved[name])
    printed = stdout.splitlines()
    assert any(line.startswith("frechet_distance") and "real clips" in line for line in printed), printed
    assert saved["wavs_clips"] == 2 and saved["recon_lsd_db_wavs"] > saved["recon_lsd_db_wavs_floor"] > 0
    assert saved["pesq_nb_wavs"] < saved["pesq_nb_wavs_floor"]
    assert any("broken.wav" in note for note in saved["notes"])
    assert broken_links(str(out)) == []


def test_evaluate_job_names_a_missing_checkpoint(small_parquet, tmp_path, capsys):
    missing = str(tmp_path / "no-such-run" / "checkpoint_0001")
    assert evaluate_job.main(["--checkpoint", missing, "--data", small_parquet, "--out", str(tmp_path / "o")]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert missing in last["error"]


def test_a_runs_best_checkpoint_is_evaluated_and_recorded_beside_its_training_metrics(
    tiny_checkpoint, small_parquet, tmp_path
):
    """What jobs.train --evaluate and the pipeline's train stage both do (vae.pipeline.evaluate_best)."""
    import shutil

    from vae.pipeline import evaluate_best

    run_dir = tmp_path / "run"
    best = run_dir / "checkpoint_0002"
    shutil.copytree(tiny_checkpoint, best)
    out = run_dir / "evaluation"
    metrics = evaluate_best(
        str(run_dir), str(best), small_parquet, str(out), config=EvalConfig(n_per_digit=1, n_unconditional=10)
    )

    assert np.isfinite(metrics["recon_lsd_db"]) and (out / "index.html").exists()
    in_checkpoint = checkpoint.load(str(best)).metrics  # still verifies: the manifest follows the new metrics.json
    in_run = json.loads((run_dir / "metrics.json").read_text())
    assert in_checkpoint["recon_lsd_db"] == in_run["recon_lsd_db"] == metrics["recon_lsd_db"]
    assert in_checkpoint["epoch"] == in_run["epoch"] == 2 and in_run["best_checkpoint"] == str(best)
