"""Any digit in your voice, measured: how little of the digit a conditional model's latent code keeps,
and how often a voice it never heard, said as another digit, is heard as that digit.

    python -m benchmarks.transfer --checkpoint CKPT --data PARQUET --classifier RECOGNISER [--speaker theo]
        [--per-digit 50] [--out JSON]

(a) probes: a logistic regression (standardised inputs) from the posterior means z (each clip encoded
with its digit) to the digit, fit on the train split's clips and scored on the test split's (chance
0.10); the same to the speaker (chance: one over the speakers). A conditional model that leaves the
digit to its label keeps little of it in z. (b) transfer: the test clips of the run's held-out
speaker (``train.held_out_speaker``, or ``--speaker``), each decoded with every digit and put through
Griffin-Lim: the share the recogniser hears as the target digit (those off the clip's own digit, and
those on it: the reconstructions), the share of the former still heard as the clip's own digit, and
pYIN's voiced share of their loud frames, beside the same clips through the features and vocoder
alone (the floor). (c) z ~ N(0, I) decoded with each digit's label, ``--per-digit`` clips each: the
share heard as that digit, and their voicing. Who the transfers sound like is not measured: the
project has no speaker recogniser. Prints a table; the last stdout line is JSON (``--out`` also
writes it).
"""

from __future__ import annotations

import argparse

import numpy as np


def probe(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a logistic regression from ``train_z`` to ``train_y`` (inputs standardised)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(model.fit(train_z, train_y).score(test_z, test_y))


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


def transfers(loaded, rec, clips: dict) -> dict:
    """(b): the held-out speaker's test clips said as every digit, their reconstructions and their floor."""
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
    return {
        "transfer": heard(rec, waves[~own], targets[~own], rate),
        "transfer_heard_as_source": float(np.mean(predicted[~own] == sources[~own])),
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


def table(doc: dict) -> str:
    """The measurements as a Markdown table."""
    p = doc["probes"]
    lines = [
        "| measure | value | reference |",
        "|---|---|---|",
        f"| (a) digit probe on z, test accuracy | {p['digit_probe_accuracy']:.3f} | chance {p['digit_probe_chance']:.2f} |",
        f"| (a) speaker probe on z, test accuracy | {p['speaker_probe_accuracy']:.3f} | chance {p['speaker_probe_chance']:.2f} |",
    ]
    floor = doc["floor"]
    for key, what in (("transfer", "(b) transfers to another digit"), ("reconstruction", "(b) to its own digit")):
        row = doc[key]
        lines.append(
            f"| {what}: heard as the target ({row['clips']} clips) | {row['heard_as_digit']:.3f} ± {row['heard_se']:.3f} "
            f"| floor {floor['heard_as_digit']:.3f} |"
        )
        lines.append(f"| {what}: voicing | {row['voicing']:.3f} | floor {floor['voicing']:.3f} |")
        if key == "transfer":
            lines.append(f"| {what}: heard as the clip's own digit | {doc['transfer_heard_as_source']:.3f} | |")
    prior = doc["prior"]
    lines.append(
        f"| (c) z ~ N(0, I) with a label: heard as it ({prior['clips']} clips) | "
        f"{prior['heard_as_digit']:.3f} ± {prior['heard_se']:.3f} | chance 0.10 |"
    )
    lines.append(f"| (c) z ~ N(0, I) with a label: voicing | {prior['voicing']:.3f} | floor {floor['voicing']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a digit-conditional checkpoint")
    ap.add_argument("--data", required=True, help="the dataset it was trained on (jobs.preprocess)")
    ap.add_argument("--classifier", required=True, help="a recogniser (jobs.train_classifier)")
    ap.add_argument("--speaker", help="whose test clips to transfer (default: the run's train.held_out_speaker)")
    ap.add_argument("--per-digit", type=int, default=50, help="N(0, I) clips per digit in (c)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from benchmarks.quality import publish
    from vae import checkpoint, generation
    from vae.config import ConfigError, to_dict
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation import recogniser

    loaded = checkpoint.load(args.checkpoint)
    generation.check_conditional(loaded)
    if to_dict(loaded.run_config.features) != to_dict(read_feature_config(args.data)):
        raise ConfigError(f"checkpoint {args.checkpoint} was trained on other features than {args.data}")
    speaker = args.speaker or loaded.run_config.train.held_out_speaker
    if not speaker:
        raise ConfigError(f"checkpoint {args.checkpoint} held no speaker out: name one with --speaker")
    columns = ["digit", "speaker", "spectrogram", "db_min", "db_max"]
    train, test = (load_split_numpy(args.data, split, columns) for split in ("train", "test"))
    clips = {k: v[test["speaker"] == speaker] for k, v in test.items()}
    if not len(clips["digit"]):
        raise ConfigError(f"{args.data}: the test split has no clip of speaker {speaker!r}")
    rec = recogniser.load(args.classifier)
    doc = {"checkpoint": loaded.uri, "data": args.data, "classifier": args.classifier, "speaker": speaker}
    doc["probes"] = probes(loaded, train, test)
    doc.update(transfers(loaded, rec, clips))
    doc["prior"] = prior_samples(loaded, rec, args.per_digit)
    print(table(doc), flush=True)
    publish(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
