"""fsdd-vae: spectrogram VAEs of spoken digits, trained and swept on Ray.

Importing the package before TensorFlow sets up every process that runs its code (the jobs, Ray
workers, Serve replicas, on any node): TensorFlow's oneDNN CPU kernels are on, which TensorFlow turns
on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX (docs/design.md says what they buy;
``TF_ENABLE_ONEDNN_OPTS=0`` turns them off), and TensorFlow's loading is as quiet as
``TF_CPP_MIN_LOG_LEVEL`` asks (:mod:`vae.console`).
"""

import os

from vae import console

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"

os.environ.setdefault(ONEDNN_ENV, "1")
console.quiet_tensorflow_import()
