"""The adversarial decoder stage of benchmarks/adversarial.py: it tunes the decoder alone (below the local code, for
a model with one), on real clips."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from tests.tiny_checkpoint import make_checkpoint


@pytest.mark.parametrize("local_channels", [0, 2])
def test_the_adversarial_stage_changes_the_decoder_and_nothing_else(fsdd_dir, tmp_path, local_channels):
    from benchmarks.adversarial import fine_tune
    from vae import checkpoint
    from vae.config import FeatureConfig, preset
    from vae.dataset import extract_clip

    loaded = checkpoint.load(
        make_checkpoint(tmp_path / "ckpt", fsdd_dir, conditional=True, pitch=True, local_channels=local_channels)
    )
    features = preset(FeatureConfig, "default")
    clips = [extract_clip(str(p), p.read_bytes(), features) for p in sorted(fsdd_dir.glob("*_lucas_1*.wav"))[:8]]
    rows = {
        "x": np.stack([c["spectrogram"] for c in clips]),
        "f0": np.stack([c["f0"] for c in clips]).astype(np.float32),
        "digit": np.array([c["digit"] for c in clips], np.int32),
    }
    model = loaded.model
    tuned = model.renderer
    assert tuned is (model.decoder_below if local_channels else model.decoder)
    frozen = [v for v in model.weights if not any(v is w for w in tuned.weights)]
    before = {id(v): v.numpy().copy() for v in model.weights}
    args = argparse.Namespace(lr=1e-3, batch_size=4, seed=0, minutes=0.002, l1=450.0, adv=1.0, fm=2.0)
    stats = fine_tune(loaded, rows, args)

    assert stats["steps"] >= 1 and all(np.isfinite(stats[k]) for k in ("d", "adv", "fm", "l1"))
    # the encoder, the pitch head, the prior, the local code's heads and the decoder above them, BN statistics
    assert all(np.array_equal(before[id(v)], v.numpy()) for v in frozen)
    assert any(not np.array_equal(before[id(v)], v.numpy()) for v in tuned.trainable_weights)
