"""The adversarial decoder stage of benchmarks/adversarial.py: it tunes the decoder alone, on real clips."""

from __future__ import annotations

import argparse

import numpy as np

from tests.tiny_checkpoint import make_checkpoint


def test_the_adversarial_stage_changes_the_decoder_and_nothing_else(fsdd_dir, tmp_path):
    from benchmarks.adversarial import fine_tune
    from vae import checkpoint
    from vae.config import FeatureConfig, preset
    from vae.dataset import extract_clip

    loaded = checkpoint.load(make_checkpoint(tmp_path / "ckpt", fsdd_dir, conditional=True, pitch=True))
    features = preset(FeatureConfig, "default")
    clips = [extract_clip(str(p), p.read_bytes(), features) for p in sorted(fsdd_dir.glob("*_lucas_1*.wav"))[:8]]
    rows = {
        "x": np.stack([c["spectrogram"] for c in clips]),
        "f0": np.stack([c["f0"] for c in clips]).astype(np.float32),
        "digit": np.array([c["digit"] for c in clips], np.int32),
    }
    model = loaded.model
    frozen = [v for v in model.weights if not any(v is w for w in model.decoder.weights)]
    before = {id(v): v.numpy().copy() for v in model.weights}
    args = argparse.Namespace(lr=1e-3, batch_size=4, seed=0, minutes=0.002, l1=450.0, adv=1.0, fm=2.0)
    stats = fine_tune(loaded, rows, args)

    assert stats["steps"] >= 1 and all(np.isfinite(stats[k]) for k in ("d", "adv", "fm", "l1"))
    assert all(np.array_equal(before[id(v)], v.numpy()) for v in frozen)  # encoder, pitch head, prior, BN statistics
    assert any(not np.array_equal(before[id(v)], v.numpy()) for v in model.decoder.trainable_weights)
