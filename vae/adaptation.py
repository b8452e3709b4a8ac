"""A voice never heard, adapted to: before a transfer says the other digits, the decoder's renderer is fine-tuned
for a few steps to say the one clip it was given as that clip, as neural voice cloning adapts a many-speaker
model to a few samples of a new voice (Arik et al. 2018). The renderer is the part of the decoder that draws
the spectrogram (:meth:`vae.models.VAE.renderer`); what says which digit, above it, is left as trained. Every
clip starts from the checkpoint's weights, and they are put back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from vae.checkpoint import LoadedModel


class Adapter:
    """Fits the renderer of ``loaded``'s model to one clip at a time: ``steps`` Adam steps of ``learning_rate``
    on the mean absolute error between the clip and its code decoded with its digit (as sampling decodes it;
    with the clip's harmonics drawn in where training drew them)."""

    def __init__(self, loaded: LoadedModel, steps: int, learning_rate: float):
        import keras
        import tensorflow as tf

        self.model, self.steps = loaded.model, int(steps)
        self.part = self.model.renderer
        self.weights = [v.numpy() for v in self.part.trainable_variables]
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.part.trainable_variables)
        self.fresh = [v.numpy() for v in self.optimizer.variables]
        self._step = tf.function(self._descend)

    def _descend(self, z, digits, target, f0):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = self.model._drawn(self.model.decode(z, digits, training=False), f0, True)
            loss = tf.reduce_mean(tf.abs(target[..., None] - tf.cast(out, tf.float32)))
        variables = self.part.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def restore(self) -> None:
        for variables, values in (
            (self.part.trainable_variables, self.weights),
            (self.optimizer.variables, self.fresh),
        ):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)

    def fit(self, z: np.ndarray, digits: np.ndarray, specs: np.ndarray, f0: np.ndarray) -> float:
        """The renderer fitted to clips ``specs`` [k, n_bins, n_frames] (one voice) from their codes ``z`` and
        ``digits``, from the checkpoint's weights; ``f0`` [k, n_frames] Hz. Returns the last step's error."""
        self.restore()
        args = [
            np.asarray(a, t) for a, t in ((z, np.float32), (digits, np.int32), (specs, np.float32), (f0, np.float32))
        ]
        loss = float("nan")
        for _ in range(self.steps):
            loss = float(self._step(*args))
        return loss


@contextmanager
def adapting(loaded: LoadedModel, steps: int, learning_rate: float) -> Iterator[Adapter]:
    """An :class:`Adapter` for ``loaded``; its model has the checkpoint's weights again when the block ends."""
    adapter = Adapter(loaded, steps, learning_rate)
    try:
        yield adapter
    finally:
        adapter.restore()
