"""Entry points, each ``python -m jobs.<name>``, the same command locally and under ``ray job submit``.

Quieter by default: TensorFlow's C++ INFO and WARNING logging (CPU-feature, oneDNN and XLA notices) is
off in the job and in the local Ray workers that inherit its environment; only the CUDA probe that
absl prints before TensorFlow reads its settings remains. ``TF_CPP_MIN_LOG_LEVEL=0`` brings them back.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
