"""Any digit in your voice, measured: how little of the digit a conditional model's latent code keeps,
and how often a voice it never heard, said as another digit, is heard as that digit.

    python -m benchmarks.transfer --checkpoint [NAME=]CKPT... --data PARQUET --classifier RECOGNISER
        [--speaker theo] [--per-digit 50] [--code-scale S] [--out JSON]

(a) probes: a logistic regression (standardised inputs) from the posterior means z (each clip encoded
with its digit) to the digit, fit on the train split's clips and scored on the test split's (chance
0.10), the same from one code drawn from each clip's posterior (a mean can hold the digit in
differences far under the posterior's spread, which no drawn code keeps), and a small neural network from
the means (:func:`network_probe`: what of the digit is not linear in them) and from drawn codes (what of
it is not linear and survives the posterior's spread: what the decoder can read); the same to the speaker
(chance: one over the speakers). A conditional model that leaves the digit to its label keeps little of
it in z; how little a code can keep while it still says when and how loud the clip is spoken, or the
colour it is heard in, are the same probes on each clip's loudness contour and long-term spectrum
(:func:`reference_probes`, the table's reference). (b) transfer: the test clips of the
run's held-out speaker (``train.held_out_speaker``, or ``--speaker``), each decoded with every digit and
put through Griffin-Lim: the share the recogniser hears as the target digit (those off the clip's own
digit, and those on it: the reconstructions), the share of the former still heard as the clip's own
digit, and pYIN's voiced share of their loud frames, beside the same clips through the features and
vocoder alone (the floor); as the decoder makes them, and matched to each clip's colour and pitch
(``matched``, as ``jobs.transfer`` writes them); each code kept at ``--code-scale`` of its distance from
the training codes' centre (default: the checkpoint's ``sampling.transfer_code_scale``, as
``jobs.transfer``). (c) z ~ N(0, I) decoded with each digit's label, ``--per-digit`` clips each: the share heard as that digit, and their voicing, for each checkpoint. Who
(b)'s clips sound like: three speaker recognisers (:func:`speaker_judges`), fit on the train split's
clips of every speaker (the held-out one's takes, which the VAE never trained on, included). Prints a
table with a column per checkpoint; the last stdout line is JSON (``--out`` also writes it).
"""

from __future__ import annotations

import argparse

import numpy as np


def probe(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray, model=None) -> float:
    """Test accuracy of ``model`` (default: a logistic regression, inputs standardised) fit from ``train_z`` to
    ``train_y``."""
    from vae.evaluation.speakers import linear_probe

    return float((model or linear_probe()).fit(train_z, train_y).score(test_z, test_y))


def network_probe(seed: int = 0):
    """An unfitted small neural network on standardised inputs (one hidden layer of 128): a probe that also
    reads what is not linear in its inputs."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), MLPClassifier((128,), alpha=1e-3, max_iter=1000, early_stopping=True, random_state=seed)
    )


DRAWS_PER_TRAIN_CLIP = 32  # codes drawn from each train clip's posterior for the network probe on drawn codes


def probes(loaded, train: dict, test: dict, seed: int = 0) -> dict:
    """(a): digit and speaker probes from the posterior means of the train split to those of the test split,
    the digit probe from one code drawn from each clip's posterior (what the decoder is trained on), the small
    network from codes drawn so (``DRAWS_PER_TRAIN_CLIP`` of each train clip, so it learns their spread), and,
    for a run that held a speaker out, the digit probe fit on the train clips of the speakers it trained on."""
    from vae import generation

    (z_train, var_train), (z_test, var_test) = (
        generation.posterior(loaded, split["spectrogram"], split["digit"]) for split in (train, test)
    )
    rng = np.random.default_rng(seed)
    drawn_train, drawn_test = (
        z + np.exp(0.5 * log_var) * rng.standard_normal(z.shape)
        for z, log_var in ((z_train, var_train), (z_test, var_test))
    )
    many_train = z_train + np.exp(0.5 * var_train) * rng.standard_normal((DRAWS_PER_TRAIN_CLIP, *z_train.shape))
    many_digits = np.tile(train["digit"], DRAWS_PER_TRAIN_CLIP)
    known = np.isin(test["speaker"], np.unique(train["speaker"]))
    held_out = loaded.run_config.train.held_out_speaker
    trained = train["speaker"] != held_out
    out = {
        "probe_clips": {"train": int(len(z_train)), "test": int(len(z_test))},
        "digit_probe_accuracy": probe(z_train, train["digit"], z_test, test["digit"]),
        "digit_probe_drawn_accuracy": probe(drawn_train, train["digit"], drawn_test, test["digit"]),
        "digit_probe_network_accuracy": probe(z_train, train["digit"], z_test, test["digit"], network_probe(seed)),
        "digit_probe_network_drawn_accuracy": probe(
            many_train.reshape(-1, z_train.shape[1]), many_digits, drawn_test, test["digit"], network_probe(seed)
        ),
        "digit_probe_chance": 0.1,
        "speaker_probe_accuracy": probe(z_train, train["speaker"], z_test[known], test["speaker"][known]),
        "speaker_probe_chance": float(1 / len(np.unique(train["speaker"]))),
        "posterior_std_median": float(np.median(np.exp(0.5 * var_test))),
    }
    if held_out:
        out["digit_probe_trained_speakers_accuracy"] = probe(
            z_train[trained], train["digit"][trained], z_test, test["digit"]
        )
    return out


def reference_probes(train: dict, test: dict, cfg, seed: int = 0) -> dict:
    """(a)'s digit probes, the linear one and the network, on what no model encoded: each clip's loudness
    contour (when and how loud it is said), its long-term spectrum (:func:`vae.features.long_term_spectrum`:
    the colour the speaker recognisers and the matching hear), and that colour less the mean colour of its
    digit over the train split (as ``erase_digit`` centres z): what a code that keeps each carries of the
    digit."""
    from vae.config import N_DIGITS
    from vae.features import frame_levels, long_term_spectrum

    colour = {name: long_term_spectrum(split["spectrogram"], cfg) for name, split in (("train", train), ("test", test))}
    means = np.stack([colour["train"][train["digit"] == d].mean(axis=0) for d in range(N_DIGITS)])
    inputs = {
        "loudness": (frame_levels(train["spectrogram"]), frame_levels(test["spectrogram"])),
        "colour": (colour["train"], colour["test"]),
        "colour_less_digit_mean": (colour["train"] - means[train["digit"]], colour["test"] - means[test["digit"]]),
    }
    return {
        name: {
            "linear": probe(fit, train["digit"], scored, test["digit"]),
            "network": probe(fit, train["digit"], scored, test["digit"], network_probe(seed)),
        }
        for name, (fit, scored) in inputs.items()
    }


def heard(rec, waves: np.ndarray, digits: np.ndarray, rate: int) -> dict:
    """Share of ``waves`` the recogniser hears as ``digits`` (with its standard error), their voicing."""
    from vae.evaluation import metrics as M

    share = M.digit_accuracy(rec.listen(waves, rate).probs, digits)
    return {
        "heard_as_digit": share,
        "heard_se": M.binomial_se(share, len(digits)),
        "voicing": M.voicing(waves, rate),
        "clips": int(len(digits)),
    }


def transfers(loaded, rec, clips: dict, judges: dict, options: dict) -> dict:
    """(b): the held-out speaker's test clips said as every digit, their reconstructions and their floor;
    the digits the recogniser hears and the speakers each of ``judges`` (name: speaker recogniser) hears;
    ``matched``: the same, the outputs matched to each clip's voice (:func:`vae.generation.transfer`, given
    ``options``)."""
    from vae.evaluation import audio

    feats = loaded.run_config.features
    ranges = (clips["db_min"], clips["db_max"]) if feats.normalisation == "per_clip" else (None, None)
    floor = audio.resynthesise(clips["spectrogram"], feats, *ranges, label="floor, griffin-lim")
    speaker = clips["speaker"][0]
    doc = said_as(loaded, rec, clips, judges, match_voice=False, options=options)
    doc["floor"] = heard(rec, floor, clips["digit"], feats.sample_rate)
    doc["floor_speakers"] = {name: float(np.mean(j.listen(floor) == speaker)) for name, j in judges.items()}
    doc["floor_speaker"] = doc["floor_speakers"]["voice_print"]
    doc["matched"] = said_as(loaded, rec, clips, judges, match_voice=True, options=options)
    return doc


def said_as(loaded, rec, clips: dict, judges: dict, match_voice: bool, options: dict) -> dict:
    """Part of (b): ``clips`` said as every digit, matched to their voices or not."""
    from vae import generation
    from vae.config import N_DIGITS
    from vae.evaluation import audio

    feats, n = loaded.run_config.features, len(clips["digit"])
    ranges = (clips["db_min"], clips["db_max"]) if feats.normalisation == "per_clip" else (None, None)
    said = generation.transfer(
        loaded,
        clips["spectrogram"],
        clips["digit"],
        range(N_DIGITS),
        match_voice=match_voice,
        source_f0=clips["f0"],
        **options,
    )
    per_clip = [None if r is None else np.repeat(r, N_DIGITS) for r in ranges]
    waves = audio.resynthesise(said.reshape(-1, *feats.shape), feats, *per_clip, label="transfers, griffin-lim")
    targets, sources = np.tile(np.arange(N_DIGITS), n), np.repeat(clips["digit"], N_DIGITS)
    rate, own = feats.sample_rate, targets == sources
    predicted = rec.listen(waves, rate).predicted
    named = {name: j.listen(waves) == clips["speaker"][0] for name, j in judges.items()}
    return {
        "transfer": heard(rec, waves[~own], targets[~own], rate),
        "transfer_heard_as_source": float(np.mean(predicted[~own] == sources[~own])),
        "transfer_speakers": {name: float(np.mean(h[~own])) for name, h in named.items()},
        "reconstruction_speakers": {name: float(np.mean(h[own])) for name, h in named.items()},
        "transfer_speaker": float(np.mean(named["voice_print"][~own])),
        "reconstruction_speaker": float(np.mean(named["voice_print"][own])),
        "reconstruction": heard(rec, waves[own], targets[own], rate),
        "transfer_heard_by_target": [float(np.mean(predicted[~own & (targets == d)] == d)) for d in range(N_DIGITS)],
    }


def prior_samples(loaded, rec, per_digit: int, seed: int = 0) -> dict:
    """(c): z ~ N(0, I) decoded with each digit's label."""
    from vae import generation
    from vae.config import N_DIGITS
    from vae.evaluation import audio

    feats = loaded.run_config.features
    digits = np.repeat(np.arange(N_DIGITS), per_digit)
    z = np.random.default_rng(seed).standard_normal((len(digits), loaded.run_config.model.latent_dim))
    specs = generation.decode(loaded, z.astype(np.float32), digits)
    waves = audio.resynthesise(specs, feats, label="N(0, I) with a label, griffin-lim")
    return heard(rec, waves, digits, feats.sample_rate)


def speaker_judges(train: dict, cfg) -> dict:
    """The speaker recognisers of (b), fit on the train split's clips of every speaker: the voice print's
    (:class:`vae.evaluation.speakers.SpeakerRecogniser`) and the cepstral mixtures', with and without each
    clip's mean cepstrum (:class:`vae.evaluation.speakers.CepstralSpeakerRecogniser`)."""
    from vae.evaluation.speakers import CepstralSpeakerRecogniser, SpeakerRecogniser

    specs, speakers = train["spectrogram"], train["speaker"]
    return {
        "voice_print": SpeakerRecogniser(specs, speakers, cfg),
        "cepstral": CepstralSpeakerRecogniser(specs, speakers, cfg, mean_normalised=False),
        "cepstral_mean_normalised": CepstralSpeakerRecogniser(specs, speakers, cfg, mean_normalised=True),
    }


def _speakers(part: str, judge: str, matched: bool = False):
    """How a table row reads the share of ``part``'s clips (transfer, reconstruction) ``judge`` names rightly."""

    def read(d: dict):
        d = d.get("matched", {}) if matched else d
        return d.get(f"{part}_speakers", {}).get(judge)

    return read


# The rows of the comparison table: (label, how to read it from one run's measurements, reference).
ROWS = (
    ("share of each clip's code kept from the codes' centre", lambda d: d.get("code_scale", 1.0), ""),
    ("steps the renderer is fitted to each clip first", lambda d: str(d.get("adapt_steps") or 0), ""),
    (
        "digit probe on z: test clips whose digit it names",
        lambda d: d["probes"]["digit_probe_accuracy"],
        "chance 0.10{loudness}{colour}",
    ),
    ("... on a code drawn from each clip's posterior", lambda d: d["probes"].get("digit_probe_drawn_accuracy"), ""),
    (
        "... fit on the train clips of the speakers trained on alone",
        lambda d: d["probes"].get("digit_probe_trained_speakers_accuracy"),
        "",
    ),
    (
        "... by a small neural network (one hidden layer of 128) on z",
        lambda d: d["probes"].get("digit_probe_network_accuracy"),
        "{network}",
    ),
    (
        "... by the network on codes drawn from each clip's posterior",
        lambda d: d["probes"].get("digit_probe_network_drawn_accuracy"),
        "",
    ),
    ("... the posterior's standard deviation (median)", lambda d: d["probes"].get("posterior_std_median"), ""),
    ("speaker probe on z: test clips whose speaker it names", lambda d: d["probes"]["speaker_probe_accuracy"], ""),
    ("transfers to the 9 other digits: heard as the target", lambda d: d["transfer"]["heard_as_digit"], "floor 1.00"),
    ("... heard as the digit said", lambda d: d["transfer_heard_as_source"], ""),
    ("... heard as its speaker", lambda d: d.get("transfer_speaker"), "floor {voice_print}"),
    ("... heard as its speaker by its cepstra", _speakers("transfer", "cepstral"), "floor {cepstral}"),
    ("... by its cepstra less their mean", _speakers("transfer", "cepstral_mean_normalised"), "floor {normalised}"),
    ("... voicing", lambda d: d["transfer"]["voicing"], "floor {voicing}"),
    ("said as their own digit: heard as it", lambda d: d["reconstruction"]["heard_as_digit"], "floor 1.00"),
    ("... heard as its speaker", lambda d: d.get("reconstruction_speaker"), "floor {voice_print}"),
    (
        "transfers matched to the voice: heard as the target",
        lambda d: d.get("matched", {}).get("transfer", {}).get("heard_as_digit"),
        "floor 1.00",
    ),
    ("... heard as its speaker", _speakers("transfer", "voice_print", matched=True), "floor {voice_print}"),
    ("... heard as its speaker by its cepstra", _speakers("transfer", "cepstral", True), "floor {cepstral}"),
    (
        "... by its cepstra less their mean",
        _speakers("transfer", "cepstral_mean_normalised", True),
        "floor {normalised}",
    ),
    ("... voicing", lambda d: d.get("matched", {}).get("transfer", {}).get("voicing"), "floor {voicing}"),
    ("z ~ N(0, I) decoded with a digit: heard as it", lambda d: d["prior"]["heard_as_digit"], "chance 0.10"),
    ("... voicing", lambda d: d["prior"]["voicing"], "floor {voicing}"),
)


def _reference_cells(references: dict | None) -> dict:
    """The reference column's words for :func:`reference_probes`' figures (empty for runs measured before)."""
    if not references:
        return {"colour": "", "network": ""}
    colour, centred = references["colour"], references["colour_less_digit_mean"]
    return {
        "colour": f", the clip's colour {colour['linear']:.2f}, less its digit's mean {centred['linear']:.2f}",
        "network": (
            f"loudness contour alone {references['loudness']['network']:.2f}, the clip's colour "
            f"{colour['network']:.2f}, less its digit's mean {centred['network']:.2f}"
        ),
    }


def table(document: dict, source: str = "transfer.json") -> str:
    """Every run's measurements side by side, a Markdown table (generated from ``benchmarks/results/<source>``)."""
    runs = document["runs"]
    lines = [
        "| measure | " + " | ".join(r["name"] for r in runs) + " | reference |",
        "|---|" + "---|" * (len(runs) + 1),
    ]
    first = next((r for r in runs if "floor_speakers" in r), runs[0])
    judged = first.get("floor_speakers", {"voice_print": first.get("floor_speaker")})
    floors = {
        "voice_print": judged.get("voice_print"),
        "cepstral": judged.get("cepstral"),
        "normalised": judged.get("cepstral_mean_normalised"),
        "voicing": first["floor"]["voicing"],
    }
    loudness = document.get("loudness_probe_accuracy")
    extra = {"loudness": "" if loudness is None else f", loudness contour alone {loudness:.2f}"}
    extra.update(_reference_cells(document.get("reference_probes")))
    for label, read, reference in ROWS:
        values = [read(r) for r in runs]
        cells = ["" if v is None else v if isinstance(v, str) else f"{v:.2f}" for v in values]
        if not any(cells) or all(c == "0" for c in cells):  # measured by a later version than these runs, or unused
            continue
        ref = reference.format(**{k: "" if v is None else f"{v:.2f}" for k, v in floors.items()}, **extra)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ref} |")
    clips = runs[0]["transfer"]["clips"], runs[0]["reconstruction"]["clips"], runs[0]["prior"]["clips"]
    commands = "; ".join(f"`{c}`" for c in document.get("commands", [document.get("command")]))
    footer = (
        f"Measured {document['date']} on {document['cpus']} CPUs, speaker {runs[0]['speaker']!r}'s test clips "
        f"({clips[0]} transfers, {clips[1]} reconstructions, {clips[2]} prior draws): {commands}. "
        f"Generated from `benchmarks/results/{source}` by `python -m benchmarks.results_table`."
    )
    return "\n".join(lines) + "\n\n" + footer


def measure(name: str, uri: str, args, train: dict, test: dict, rec, judges: dict) -> dict:
    """(a), (b) and (c) of the checkpoint at ``uri``."""
    from vae import checkpoint, generation
    from vae.config import ConfigError, to_dict
    from vae.dataset import read_feature_config

    loaded = checkpoint.load(uri)
    generation.check_conditional(loaded)
    if to_dict(loaded.run_config.features) != to_dict(read_feature_config(args.data)):
        raise ConfigError(f"checkpoint {uri} was trained on other features than {args.data}")
    speaker = args.speaker or loaded.run_config.train.held_out_speaker
    if not speaker:
        raise ConfigError(f"checkpoint {uri} held no speaker out: name one with --speaker")
    clips = {k: v[test["speaker"] == speaker] for k, v in test.items()}
    if not len(clips["digit"]):
        raise ConfigError(f"{args.data}: the test split has no clip of speaker {speaker!r}")
    scale = loaded.run_config.sampling.transfer_code_scale if args.code_scale is None else args.code_scale
    options = {"code_scale": scale, "adapt_steps": args.adapt_steps, "adapt_rate": args.adapt_rate}
    doc = {"name": name, "checkpoint": loaded.uri, "speaker": speaker, **options}
    doc["probes"] = probes(loaded, train, test)
    doc.update(transfers(loaded, rec, clips, judges, options))
    doc["prior"] = prior_samples(loaded, rec, args.per_digit)
    return doc


def main(argv: list[str] | None = None) -> int:
    from jobs.transfer import code_scale

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", required=True, nargs="+", help="digit-conditional checkpoints, each PATH or NAME=PATH"
    )
    ap.add_argument("--data", required=True, help="the dataset they were trained on (jobs.preprocess)")
    ap.add_argument("--classifier", required=True, help="a recogniser (jobs.train_classifier)")
    ap.add_argument("--speaker", help="whose test clips to transfer (default: each run's train.held_out_speaker)")
    ap.add_argument("--per-digit", type=int, default=50, help="N(0, I) clips per digit in (c)")
    ap.add_argument(
        "--code-scale",
        type=code_scale,
        help="share of each code kept in (b) (default: each checkpoint's sampling.transfer_code_scale)",
    )
    ap.add_argument(
        "--adapt-steps",
        type=int,
        default=0,
        help="fine-tune the decoder's renderer this many steps on each clip before it is said as the other digits",
    )
    ap.add_argument("--adapt-rate", type=float, default=1e-4, help="the learning rate of --adapt-steps")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from benchmarks.quality import publish, stamp
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation import recogniser

    columns = ["digit", "speaker", "spectrogram", "db_min", "db_max", "f0"]
    train, test = (load_split_numpy(args.data, split, columns) for split in ("train", "test"))
    rec = recogniser.load(args.classifier)
    judges = speaker_judges(train, read_feature_config(args.data))
    runs = []
    for given in args.checkpoint:
        name, _, uri = given.rpartition("=")
        runs.append(measure(name or uri, uri, args, train, test, rec, judges))
    references = reference_probes(train, test, read_feature_config(args.data))
    document = {
        "data": args.data,
        "classifier": args.classifier,
        "loudness_probe_accuracy": references["loudness"]["linear"],
        "reference_probes": references,
        "runs": runs,
    }
    print(table(stamp(document, "benchmarks.transfer")), flush=True)
    publish(document, args.out, "benchmarks.transfer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
