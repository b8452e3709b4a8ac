"""fsdd-vae: spectrogram VAEs of spoken digits, trained and swept on Ray.

TensorFlow's oneDNN CPU kernels are on in every process that imports this package before TensorFlow:
the jobs, and the Ray workers and Serve replicas that run its code, on any node. TensorFlow turns them
on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on the AVX2 CPUs measured here they train the
`default` VAE ~1.16x and the digit recogniser ~1.7x faster (README, "Training speed").
``TF_ENABLE_ONEDNN_OPTS=0`` in the environment turns them off.
"""

import os

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"

os.environ.setdefault(ONEDNN_ENV, "1")
