"""A second, adversarial stage for the decoder (RAVE's second phase, Caillon & Esling 2021): does it put
back the fine detail a squared-error decoder averages away?

    python -m benchmarks.adversarial --data PARQUET --classifier RECOGNISER --checkpoint C --minutes 8
        [--adv 1 --fm 2 --l1 450] [--out benchmarks/results/adversarial.json] [--keep DIR]

The checkpoint's encoder, pitch head and prior stay frozen (its latent statistics and ex-post mixtures stay
valid); its decoder (for a model with a local code, the part below that code) is fine-tuned for ``--minutes``
on the training clips the checkpoint trained on (its held-out speaker left out, its augmented copies included)
against a patch discriminator on what sampling renders (:func:`generated`, the clip's harmonics drawn in as
deep as the checkpoint decodes them): the generator minimises ``l1`` x the mean absolute error of the
reconstruction + ``adv`` x the least-squares adversarial term + ``fm`` x the discriminator's feature matching
(``--adv 0 --fm 0``: the same fine-tuning without the discriminator). The fine-tuned checkpoint and the
original are scored by ``vae.evaluation.run.evaluate_run`` side by side. Single process (no Ray Train): a prototype that decides
whether the stage earns a place in the library.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from benchmarks.quality import METRICS, publish, score_checkpoint


def train_rows(data: str, run_cfg) -> dict[str, np.ndarray]:
    """The checkpoint's training clips (train split, held-out speaker left out) and their augmented copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vae.augment import augment_table
    from vae.dataset import parquet_files

    loc, files = parquet_files(data)
    filters = [("split", "==", "train"), ("speaker", "!=", run_cfg.train.held_out_speaker)]
    columns = ["id", "digit", "speaker", "split", "spectrogram", "f0"]
    table = pa.concat_tables([pq.read_table(f, filesystem=loc.fs, columns=columns, filters=filters) for f in files])
    tables = [table] + [
        augment_table(table, c, run_cfg.train, run_cfg.features) for c in range(1, run_cfg.train.augment_copies + 1)
    ]
    rows = {"x": [], "f0": [], "digit": []}
    for t in tables:
        rows["x"].append(t.column("spectrogram").combine_chunks().to_numpy_ndarray())
        rows["f0"].append(t.column("f0").combine_chunks().to_numpy_ndarray())
        rows["digit"].append(np.asarray(t.column("digit").to_pylist(), np.int32))
    return {k: np.concatenate(v) for k, v in rows.items()}


def build_discriminator(input_hw: tuple[int, int], filters=(32, 64, 128)):
    """A patch discriminator: strided convolutions, leaky ReLU, one logit per patch; returns every layer's
    activations (for feature matching) and the logits last."""
    import keras

    x = inputs = keras.Input((*input_hw, 1))
    outs = []
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, (5, 5), strides=2, padding="same", name=f"d_conv_{i}")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        outs.append(x)
    outs.append(keras.layers.Conv2D(1, (3, 3), padding="same", name="d_logits")(x))
    return keras.Model(inputs, outs, name="discriminator")


def generated(model, features, f0, digits, z, depth_db: float):
    """(what the discriminator sees as fake, what the L1 term holds to the clip) for codes ``z`` of clips whose
    encoder map for the local code is ``features``.

    Without a local code both are the decoder's output with the clip's harmonics drawn ``depth_db`` deep. With
    one, the fake is what sampling renders (the local prior's mean, harmonics ``depth_db`` deep) and the L1 term
    holds the reconstruction (the local posterior's mean, scored as training scores it)."""
    if not model.model_cfg.local_channels:
        fake = model.draw_harmonics(model.decode(z, digits, training=False), f0, depth_db)
        return fake, fake
    from vae.models import _stats

    above = model.decoder_above(model._with_digits(z, digits), training=False)
    prior_mu = _stats(*model.local_prior(above, training=False))[0]
    post_mu = model.local_posterior([above, features], training=False)[0]
    fake = model.draw_harmonics(model._decode_below(above, prior_mu, False), f0, depth_db)
    return fake, model._drawn(model._decode_below(above, post_mu, False), f0, True)


def fine_tune(loaded, rows: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, float]:
    import keras
    import tensorflow as tf

    model = loaded.model
    decoder = model.renderer
    depth = loaded.run_config.sampling.harmonic_depth_db
    disc = build_discriminator(model.input_hw)
    g_opt = keras.optimizers.Adam(args.lr, beta_1=0.5, beta_2=0.9)
    d_opt = keras.optimizers.Adam(args.lr, beta_1=0.5, beta_2=0.9)
    g_opt.build(decoder.trainable_variables)
    d_opt.build(disc.trainable_variables)

    @tf.function
    def step(x, f0, digits, eps):
        x = x[..., None]
        mu, log_var, features = model._encode(x, digits, False)
        z = mu + tf.exp(0.5 * log_var) * eps
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake, held = generated(model, features, f0, digits, z, depth)
            real_out, fake_out = disc(x, training=True), disc(fake, training=True)
            d_loss = tf.reduce_mean(tf.square(real_out[-1] - 1.0)) + tf.reduce_mean(tf.square(fake_out[-1]))
            adv = tf.reduce_mean(tf.square(fake_out[-1] - 1.0))
            fm = tf.add_n(
                [
                    tf.reduce_mean(tf.abs(tf.stop_gradient(r) - f))
                    for r, f in zip(real_out[:-1], fake_out[:-1], strict=True)
                ]
            ) / len(real_out[:-1])
            l1 = tf.reduce_mean(tf.abs(x - held))
            g_loss = args.l1 * l1 + args.adv * adv + args.fm * fm
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, decoder.trainable_variables), decoder.trainable_variables))
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, disc.trainable_variables), disc.trainable_variables))
        return {"d": d_loss, "adv": adv, "fm": fm, "l1": l1}

    rng = np.random.default_rng(args.seed)
    n, batch = len(rows["x"]), args.batch_size
    deadline, steps, epoch, last = time.perf_counter() + 60 * args.minutes, 0, 0, {}
    while time.perf_counter() < deadline:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            idx = order[start : start + batch]
            eps = rng.standard_normal((batch, model.model_cfg.latent_dim)).astype(np.float32)
            last = step(rows["x"][idx], rows["f0"][idx], rows["digit"][idx], eps)
            steps += 1
            if time.perf_counter() >= deadline:
                break
        epoch += 1
        print(f"epoch {epoch}: steps {steps}, " + ", ".join(f"{k} {float(v):.4g}" for k, v in last.items()), flush=True)
    return {"steps": steps, "epochs": epoch, **{k: float(v) for k, v in last.items()}}


def save_like(loaded, directory: str) -> str:
    """The fine-tuned model as a checkpoint beside the original's config, statistics and mixtures."""
    from vae import checkpoint

    shutil.rmtree(directory, ignore_errors=True)
    return checkpoint.save(
        directory,
        loaded.model,
        None,
        loaded.epoch,
        loaded.run_config,
        loaded.metrics,
        loaded.latent_stats,
        loaded.expost or None,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--adv", type=float, default=1.0)
    p.add_argument("--fm", type=float, default=2.0)
    p.add_argument("--l1", type=float, default=450.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-original", action="store_true", help="score the fine-tuned checkpoint only")
    p.add_argument("--out")
    p.add_argument("--keep", help="folder to keep the fine-tuned checkpoint in")
    args = p.parse_args()

    from vae import checkpoint

    def score(uri: str) -> dict:
        return score_checkpoint(uri, args.data, args.classifier)

    rows_out = [] if args.skip_original else [{"variant": "original", **score(args.checkpoint)}]
    loaded = checkpoint.load(args.checkpoint)
    rows = train_rows(args.data, loaded.run_config)
    t0 = time.perf_counter()
    stats = fine_tune(loaded, rows, args)
    train_s = time.perf_counter() - t0
    where = args.keep or tempfile.mkdtemp(prefix="adversarial-")
    tuned = save_like(loaded, os.path.join(where, f"adv{args.adv:g}-fm{args.fm:g}-l1{args.l1:g}"))
    rows_out.append(
        {
            "variant": f"adversarial (adv {args.adv:g}, fm {args.fm:g}, l1 {args.l1:g})",
            "train_s": round(train_s, 1),
            **stats,
            **score(tuned),
        }
    )
    for r in rows_out:
        print(r["variant"], {k: r.get(k) for k in METRICS})
    publish(
        {"module": "benchmarks.adversarial", "args": vars(args), "rows": rows_out}, args.out, "benchmarks.adversarial"
    )


if __name__ == "__main__":
    main()
