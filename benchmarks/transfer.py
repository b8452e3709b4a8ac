"""Any digit in your voice, measured: how little of the digit a conditional model's latent code keeps,
and how often a voice it never heard, said as another digit, is heard as that digit.

    python -m benchmarks.transfer --checkpoint [NAME=]CKPT... --data PARQUET --classifier RECOGNISER
        [--speaker theo] [--per-digit 50] [--out JSON]

(a) probes: a logistic regression (standardised inputs) from the posterior means z (each clip encoded
with its digit) to the digit, fit on the train split's clips and scored on the test split's (chance
0.10); the same to the speaker (chance: one over the speakers). A conditional model that leaves the
digit to its label keeps little of it in z. (b) transfer: the test clips of the run's held-out
speaker (``train.held_out_speaker``, or ``--speaker``), each decoded with every digit and put through
Griffin-Lim: the share the recogniser hears as the target digit (those off the clip's own digit, and
those on it: the reconstructions), the share of the former still heard as the clip's own digit, and
pYIN's voiced share of their loud frames, beside the same clips through the features and vocoder
alone (the floor). (c) z ~ N(0, I) decoded with each digit's label, ``--per-digit`` clips each: the
share heard as that digit, and their voicing, for each checkpoint. Who (b)'s clips sound like:
:class:`vae.evaluation.speakers.SpeakerRecogniser`, fit on the train split's clips of every speaker (the
held-out one's takes, which the VAE never trained on, included). Prints a table with a column per
checkpoint; the last stdout line is JSON (``--out`` also
writes it).
"""

from __future__ import annotations

import argparse

import numpy as np


def probe(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a logistic regression from ``train_z`` to ``train_y`` (inputs standardised)."""
    from vae.evaluation.speakers import linear_probe

    return float(linear_probe().fit(train_z, train_y).score(test_z, test_y))


def probes(loaded, train: dict, test: dict) -> dict:
    """(a): digit and speaker probes from the posterior means of the train split to those of the test split."""
    from vae import generation

    z_train = generation.encode(loaded, train["spectrogram"], train["digit"])
    z_test = generation.encode(loaded, test["spectrogram"], test["digit"])
    known = np.isin(test["speaker"], np.unique(train["speaker"]))
    return {
        "probe_clips": {"train": int(len(z_train)), "test": int(len(z_test))},
        "digit_probe_accuracy": probe(z_train, train["digit"], z_test, test["digit"]),
        "digit_probe_chance": 0.1,
        "speaker_probe_accuracy": probe(z_train, train["speaker"], z_test[known], test["speaker"][known]),
        "speaker_probe_chance": float(1 / len(np.unique(train["speaker"]))),
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


def transfers(loaded, rec, clips: dict, speakers) -> dict:
    """(b): the held-out speaker's test clips said as every digit, their reconstructions and their floor;
    the digits the recogniser hears and the speakers ``speakers`` hears."""
    from vae import generation
    from vae.config import N_DIGITS
    from vae.evaluation import audio

    feats, n = loaded.run_config.features, len(clips["digit"])
    ranges = (clips["db_min"], clips["db_max"]) if feats.normalisation == "per_clip" else (None, None)
    said = generation.transfer(loaded, clips["spectrogram"], clips["digit"], range(N_DIGITS))
    flat = said.reshape(-1, *feats.shape)
    per_clip = [None if r is None else np.repeat(r, N_DIGITS) for r in ranges]
    waves = audio.resynthesise(flat, feats, *per_clip, label="transfers, griffin-lim")
    targets, sources = np.tile(np.arange(N_DIGITS), n), np.repeat(clips["digit"], N_DIGITS)
    floor = audio.resynthesise(clips["spectrogram"], feats, *ranges, label="floor, griffin-lim")
    rate, own = feats.sample_rate, targets == sources
    predicted = rec.listen(waves, rate).predicted
    speaker = clips["speaker"][0]
    return {
        "transfer": heard(rec, waves[~own], targets[~own], rate),
        "transfer_heard_as_source": float(np.mean(predicted[~own] == sources[~own])),
        "transfer_speaker": float(np.mean(speakers.listen(waves[~own]) == speaker)),
        "reconstruction_speaker": float(np.mean(speakers.listen(waves[own]) == speaker)),
        "floor_speaker": float(np.mean(speakers.listen(floor) == speaker)),
        "reconstruction": heard(rec, waves[own], targets[own], rate),
        "floor": heard(rec, floor, clips["digit"], rate),
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


# The rows of the comparison table: (label, how to read it from one run's measurements, reference).
ROWS = (
    ("digit probe on z: test clips whose digit it names", lambda d: d["probes"]["digit_probe_accuracy"], "chance 0.10"),
    ("speaker probe on z: test clips whose speaker it names", lambda d: d["probes"]["speaker_probe_accuracy"], ""),
    ("transfers to the 9 other digits: heard as the target", lambda d: d["transfer"]["heard_as_digit"], "floor 1.00"),
    ("... heard as the digit said", lambda d: d["transfer_heard_as_source"], ""),
    ("... heard as its speaker", lambda d: d.get("transfer_speaker"), "floor {floor_speaker}"),
    ("... voicing", lambda d: d["transfer"]["voicing"], "floor {floor_voicing}"),
    ("said as their own digit: heard as it", lambda d: d["reconstruction"]["heard_as_digit"], "floor 1.00"),
    ("... heard as its speaker", lambda d: d.get("reconstruction_speaker"), "floor {floor_speaker}"),
    ("z ~ N(0, I) decoded with a digit: heard as it", lambda d: d["prior"]["heard_as_digit"], "chance 0.10"),
    ("... voicing", lambda d: d["prior"]["voicing"], "floor {floor_voicing}"),
)


def table(document: dict) -> str:
    """Every run's measurements side by side, a Markdown table."""
    runs = document["runs"]
    lines = [
        "| measure | " + " | ".join(r["name"] for r in runs) + " | reference |",
        "|---|" + "---|" * (len(runs) + 1),
    ]
    floors = {"floor_speaker": runs[0].get("floor_speaker"), "floor_voicing": runs[0]["floor"]["voicing"]}
    for label, read, reference in ROWS:
        cells = ["" if read(r) is None else f"{read(r):.2f}" for r in runs]
        ref = reference.format(**{k: "" if v is None else f"{v:.2f}" for k, v in floors.items()})
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ref} |")
    clips = runs[0]["transfer"]["clips"], runs[0]["reconstruction"]["clips"], runs[0]["prior"]["clips"]
    commands = "; ".join(f"`{c}`" for c in document.get("commands", [document.get("command")]))
    footer = (
        f"Measured {document['date']} on {document['cpus']} CPUs, speaker {runs[0]['speaker']!r}'s test clips "
        f"({clips[0]} transfers, {clips[1]} reconstructions, {clips[2]} prior draws): {commands}. "
        "Generated from `benchmarks/results/transfer.json` by `python -m benchmarks.results_table`."
    )
    return "\n".join(lines) + "\n\n" + footer


def measure(name: str, uri: str, args, train: dict, test: dict, rec) -> dict:
    """(a), (b) and (c) of the checkpoint at ``uri``."""
    from vae import checkpoint, generation
    from vae.config import ConfigError, to_dict
    from vae.dataset import read_feature_config
    from vae.evaluation.speakers import SpeakerRecogniser

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
    doc = {"name": name, "checkpoint": loaded.uri, "speaker": speaker, "probes": probes(loaded, train, test)}
    speakers = SpeakerRecogniser(train["spectrogram"], train["speaker"], loaded.run_config.features)
    doc.update(transfers(loaded, rec, clips, speakers))
    doc["prior"] = prior_samples(loaded, rec, args.per_digit)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", required=True, nargs="+", help="digit-conditional checkpoints, each PATH or NAME=PATH"
    )
    ap.add_argument("--data", required=True, help="the dataset they were trained on (jobs.preprocess)")
    ap.add_argument("--classifier", required=True, help="a recogniser (jobs.train_classifier)")
    ap.add_argument("--speaker", help="whose test clips to transfer (default: each run's train.held_out_speaker)")
    ap.add_argument("--per-digit", type=int, default=50, help="N(0, I) clips per digit in (c)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from benchmarks.quality import publish, stamp
    from vae.dataset import load_split_numpy
    from vae.evaluation import recogniser

    columns = ["digit", "speaker", "spectrogram", "db_min", "db_max"]
    train, test = (load_split_numpy(args.data, split, columns) for split in ("train", "test"))
    rec = recogniser.load(args.classifier)
    runs = []
    for given in args.checkpoint:
        name, _, uri = given.rpartition("=")
        runs.append(measure(name or uri, uri, args, train, test, rec))
    document = {"data": args.data, "classifier": args.classifier, "runs": runs}
    print(table(stamp(document, "benchmarks.transfer")), flush=True)
    publish(document, args.out, "benchmarks.transfer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
