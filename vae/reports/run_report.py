"""The per-run report: metrics against their floors, clips to look at and listen to, curves, latent maps.

Written into a local folder (``index.html``, ``clips/``, ``plots/``); every file
is referenced relatively. :func:`write` puts it, with ``metrics.json``, in a local or s3://
folder; :func:`evaluate_and_report` evaluates a checkpoint (:mod:`vae.evaluation`) and writes both.
The report depends on the evaluation, never the reverse.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import numpy as np

from vae import storage
from vae.config import N_DIGITS, EvalConfig, to_dict
from vae.evaluation.audio import to_spectrograms
from vae.evaluation.evaluators import METRICS, REFERENCES
from vae.evaluation.evaluators.mixture import component_table
from vae.evaluation.run import METRICS_FILE, Evaluation, evaluate, metrics_document
from vae.features import write_wav
from vae.reports import plots
from vae.reports.html import Cell, Page

log = logging.getLogger(__name__)

CURVE_KEYS = ("loss", "recon_mse", "kl")
N_WAVEFORM_EXAMPLES = 3


def evaluate_and_report(
    loaded,
    data_uri: str,
    out_uri: str,
    classifier_uri: str | None = None,
    config: EvalConfig | None = None,
    wavs_uri: str | None = None,
) -> dict[str, Any]:
    """:func:`vae.evaluation.run.evaluate_run`, with ``metrics.json`` and the report written to ``out_uri``
    (folder or s3://)."""
    ev = evaluate(loaded, data_uri, classifier_uri, config or EvalConfig(), wavs_uri)
    write(ev, out_uri)
    return dict(ev.metrics)


def write(ev: Evaluation, out_uri: str) -> str:
    """``metrics.json`` first, so a failing plot loses no number, then the report (built locally,
    copied when ``out_uri`` is s3://). Returns ``out_uri`` resolved."""
    storage.write_json(storage.join(out_uri, METRICS_FILE), metrics_document(ev))
    if storage.is_s3(out_uri):
        with tempfile.TemporaryDirectory(prefix="fsdd-vae-eval-") as tmp:
            write_run_report(ev, tmp)
            storage.copy_tree(tmp, out_uri)
    else:
        write_run_report(ev, storage.resolve(out_uri).path)
    return storage.resolve(out_uri).uri


def write_run_report(ev: Evaluation, folder: str) -> str:
    """Write the report of an evaluation into ``folder``; returns index.html's path."""
    os.makedirs(folder, exist_ok=True)
    rc = ev.run_config
    log.info(f"writing report into {folder}")

    page = Page(
        "Run report",
        f"{run_name(ev.checkpoint)} | epoch {ev.epoch} | prior {rc.prior.kind} | "
        f"model filters {list(rc.model.filters)}, latent {rc.model.latent_dim}",
    )
    sentence = headline(ev.metrics)
    if sentence:
        page.headline(sentence)
    page.details(
        "Provenance",
        [("checkpoint", str(ev.checkpoint)), ("data", str(ev.data)), ("recogniser", str(ev.classifier or "none"))],
    )
    if ev.notes:
        page.bullets(ev.notes, cls="note")

    for section in SECTIONS:
        section(page, ev, folder)
    return page.write(folder)


def run_name(checkpoint_uri: str) -> str:
    """``run <folder>, <checkpoint>`` from a checkpoint's URI: its last two names, never the whole path."""
    parts = [p for p in str(checkpoint_uri).replace("\\", "/").split("/") if p]
    if len(parts) < 2:
        return f"checkpoint {parts[-1] if parts else '?'}"
    run = parts[-3] if parts[-2] == "train" and len(parts) > 2 else parts[-2]  # a demo's <run>/train/checkpoint_N
    return f"run {run}, {parts[-1]}"


def headline(m: dict[str, Any]) -> str:
    """One sentence of the metrics a listener cares about, with only the parts whose metrics exist."""
    parts = []
    if "digit_accuracy" in m:
        real = m.get("digit_accuracy_real")
        parts.append(
            f"Heard as the digit asked for {m['digit_accuracy']:.0%} of the time"
            + ("" if real is None else f" (real clips {real:.1%})")
        )
    if "voicing_samples" in m:
        real = m.get("voicing_real")
        parts.append(
            f"samples are voiced {m['voicing_samples']:.0%} of loud frames"
            + ("" if real is None else f" (real speech {real:.0%})")
        )
    for key, whose in (
        ("held_out_pesq_nb", "reconstructions of a voice it never heard"),
        ("pesq_nb", "reconstructions"),
    ):
        if key in m:
            floor = m.get(f"{key}_floor")
            parts.append(f"{whose} score PESQ {m[key]:.2f}" + ("" if floor is None else f" (vocoder {floor:.2f})"))
            break
    if not parts:
        return ""
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _plot(folder: str, name: str) -> str:
    return os.path.join(folder, "plots", name)


def _metrics(page: Page, ev: Evaluation, folder: str) -> None:
    """Every metric beside its vocoder floor and the real clips' score."""
    m = ev.metrics
    page.heading("Metrics", anchor="metrics")
    page.text(
        "Every number is computed on audio: the model's spectrograms are turned into WAVs by Griffin-Lim and read "
        "back with the same features. The vocoder floor is the same metric for the real test clips sent through "
        "features and Griffin-Lim alone: what a perfect model could score here. The real clips are the test clips "
        "untouched; for the Frechet distance they are other recordings (the train split's), since the floor's draws "
        "are test clips, part of what they are compared with, and score lower than any other recordings."
    )
    rows = []
    for name, (higher, meaning) in METRICS.items():
        if name in m:
            ref = REFERENCES.get(name, name)
            rows.append(
                [name, m[name], m.get(f"{ref}_floor"), m.get(f"{ref}_real"), "higher" if higher else "lower", meaning]
            )
    page.table(["metric", "model", "vocoder floor", "real clips", "better", "meaning"], rows)
    draws = m.get("frechet_distance_draws") or []
    page.text(
        f"{m['test_clips']} test clips; {m.get('conditional_samples', 0)} digit-conditional and "
        f"{m.get('unconditional_samples', 0)} unconditional samples"
        + (
            f" (inception score and Frechet distance: means over {len(draws)} draws; Frechet distance of each: "
            + ", ".join(f"{v:.1f}" for v in draws)
            + ")."
            if len(draws) > 1
            else "."
        )
        + _voice_counts(m)
    )


def _voice_counts(m: dict) -> str:
    """What the voice metrics scored, for the text under the metric table."""
    if "voice_clips" not in m:
        return ""
    return (
        f" Voicing and PESQ: {m['voice_clips']} test clips and {m['voicing_samples_clips']} samples; PESQ could not "
        f"score {m['pesq_nb_skipped']} reconstructions and {m['pesq_nb_floor_skipped']} floor clips (left out)."
    )


def _clips(page: Page, ev: Evaluation, folder: str) -> None:
    """Real, reconstructed and generated clips of every digit, as spectrograms with their audio."""
    feats = ev.features
    page.heading("Real, reconstructed and generated clips", anchor="clips")
    page.text(
        "Spectrograms of the audio itself (low frequencies at the bottom). Generated clips are captioned with what the recogniser heard."
    )
    heard_recon = to_spectrograms(ev.reconstructions, feats.sample_rate, feats)
    heard_gen = to_spectrograms(ev.generated, feats.sample_rate, feats)
    n_show = ev.config.n_report_per_digit
    grid_rows: list[list[Cell]] = []
    for d in range(N_DIGITS):
        real_idx = _spread(np.flatnonzero(ev.test_digits == d), n_show)
        gen_idx = np.flatnonzero(ev.generated_digits == d)[:n_show]
        real, recon, gen = [], [], []
        for i in real_idx:
            ident = str(ev.test_ids[i])
            real.append(_clip(folder, f"real_{ident}", ev.test_specs[i], ev.originals[i], feats, ident))
            recon.append(_clip(folder, f"recon_{ident}", heard_recon[i], ev.reconstructions[i], feats, ident))
        for j, i in enumerate(gen_idx):
            heard = None if ev.generated_heard is None else int(ev.generated_heard[i])
            cap = f"#{j}" + ("" if heard is None else f" heard {heard}")
            gen.append(
                _clip(
                    folder,
                    f"gen_{d}_{j}",
                    heard_gen[i],
                    ev.generated[i],
                    feats,
                    cap,
                    bad=heard is not None and heard != d,
                )
            )
        grid_rows.append(real + recon + gen)
    page.grid(
        [f"digit {d}" for d in range(N_DIGITS)],
        grid_rows,
        col_labels=["real"] * n_show + ["reconstructed"] * n_show + ["generated"] * n_show,
    )


def _recogniser(page: Page, ev: Evaluation, folder: str) -> None:
    """Per-digit accuracy and the confusion matrix of the conditional samples (with a recogniser)."""
    m = ev.metrics
    if "digit_accuracy_per_digit" not in m or ev.generated_heard is None:  # both come with a recogniser
        return
    per = m["digit_accuracy_per_digit"]
    plots.bars(
        [str(d) for d in range(N_DIGITS)],
        {"model": [per[str(d)] for d in range(N_DIGITS)]},
        _plot(folder, "digit_accuracy.png"),
        "digit accuracy of conditional samples",
        "share heard as asked",
    )
    confusion = np.zeros((N_DIGITS, N_DIGITS), np.int64)
    np.add.at(confusion, (ev.generated_digits, ev.generated_heard), 1)
    plots.count_table(confusion, _plot(folder, "confusion.png"), "heard as", "asked for", "what the recogniser heard")
    page.heading("What the recogniser heard", anchor="recogniser")
    page.row(("plots/digit_accuracy.png", "digit accuracy per digit"), ("plots/confusion.png", "confusion matrix"))


def _waveforms(page: Page, ev: Evaluation, folder: str) -> None:
    """A few test clips' waveforms beside their reconstructions'."""
    feats = ev.features
    page.heading("Waveforms", anchor="waveforms")
    picks = _spread(np.arange(len(ev.test_ids)), N_WAVEFORM_EXAMPLES)
    plots.waveforms(
        [(str(ev.test_ids[i]), ev.originals[i], ev.reconstructions[i]) for i in picks],
        feats.sample_rate,
        _plot(folder, "waveforms.png"),
    )
    page.image("plots/waveforms.png", "original and reconstructed waveforms")


def _curves(page: Page, ev: Evaluation, folder: str) -> None:
    """Training and validation curves from the checkpoint's history."""
    page.heading("Training curves", anchor="curves")
    keys = [k for k in CURVE_KEYS if any(f"train_{k}" in r or f"val_{k}" in r for r in ev.history)]
    if not keys:
        page.text("No per-epoch metrics were found with this checkpoint.", cls="note")
        return
    plots.curves(ev.history, keys, _plot(folder, "curves.png"))
    page.image("plots/curves.png", "training and validation curves")
    if any("grad_norm_max" in r for r in ev.history):
        plots.gradient_norms(ev.history, ev.run_config.train.clip_norm, _plot(folder, "gradient_norms.png"))
        page.image("plots/gradient_norms.png", "each epoch's median and largest gradient norm, and the clipping limit")
    last = int(ev.history[-1]["epoch"])
    if len(ev.history) < last:
        page.text(
            f"Only {len(ev.history)} of {last} epochs are shown: the run keeps the metrics of its kept checkpoints only.",
            cls="note",
        )


def _latent(page: Page, ev: Evaluation, folder: str) -> None:
    """PCA and t-SNE maps of the test clips' posterior means."""
    page.heading("Latent space of the test clips", anchor="latent")
    pca, tsne = project(ev.latents, ev.config.tsne_perplexity, ev.config.seed)
    plots.latent_map(pca, ev.test_digits, _plot(folder, "latent_pca.png"), "PCA of posterior means")
    plots.latent_map(tsne, ev.test_digits, _plot(folder, "latent_tsne.png"), "t-SNE of posterior means")
    page.row(("plots/latent_pca.png", "latent PCA"), ("plots/latent_tsne.png", "latent t-SNE"))


def _components(page: Page, ev: Evaluation, folder: str) -> None:
    """Which digits each prior component holds (a prior with components)."""
    if ev.components is None:
        return
    from vae.priors import PRIORS

    m, prior = ev.metrics, ev.run_config.prior
    k = PRIORS[prior.kind].components_of(prior)
    table = component_table(ev.components, ev.test_digits, k)
    plots.count_table(
        table, _plot(folder, "components.png"), "mixture component", "digit", "test clips per digit and component"
    )
    page.heading("Mixture components", anchor="components")
    page.text(
        f"Which digits each of the {k} components holds (test clips assigned to their most likely component). "
        f"Purity {m.get('component_purity', float('nan')):.3f}: share of clips in a component whose majority digit is theirs."
    )
    page.image("plots/components.png", "component x digit table")
    page.table(
        ["component", *[f"digit {d}" for d in range(N_DIGITS)], "total"],
        [[c, *[int(v) for v in table[:, c]], int(table[:, c].sum())] for c in range(k)],
    )


def _configuration(page: Page, ev: Evaluation, folder: str) -> None:
    """The run's and the evaluation's configs, and every number."""
    m = ev.metrics
    page.heading("Configuration", anchor="config")
    page.pre(json.dumps({"run": to_dict(ev.run_config), "evaluation": to_dict(ev.config)}, indent=2))
    page.text("metrics.json holds every number above.")
    page.bullets([f"{k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in sorted(m.items())])


# The report's sections, in page order.
SECTIONS = (_metrics, _clips, _recogniser, _waveforms, _curves, _latent, _components, _configuration)


def project(latents: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(PCA, t-SNE) 2-D projections of ``latents``; degenerate inputs are padded rather than refused."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    z = np.asarray(latents, np.float64)
    if z.shape[1] < 2:
        z = np.concatenate([z, np.zeros((len(z), 2 - z.shape[1]))], axis=1)
    pca = PCA(n_components=2, random_state=seed).fit_transform(z)
    perplexity = float(min(perplexity, max(1.0, (len(z) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    return pca, tsne


def _clip(folder: str, stem: str, spec: np.ndarray, wave: np.ndarray, feats, caption: str, bad: bool = False) -> Cell:
    stem = storage.safe_name(stem)  # stems carry clip ids from the data: never a path of their own
    png, wav = f"clips/{stem}.png", f"clips/{stem}.wav"
    plots.spectrogram_image(spec, os.path.join(folder, png), scale=1)
    write_wav(os.path.join(folder, wav), wave, feats)
    return Cell(image=png, audio=wav, caption=caption, bad=bad)


def _spread(indices: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of ``indices``, evenly spread (so the examples span speakers and takes)."""
    if len(indices) <= n:
        return indices
    return indices[np.linspace(0, len(indices) - 1, n).round().astype(int)]
