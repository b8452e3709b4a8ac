"""Scoring what a VAE makes audible: a digit recogniser, sample-quality metrics and their vocoder floors.

``from vae.evaluation import evaluate_run`` is the entry point (see :mod:`vae.evaluation.run`);
the package itself imports nothing heavy, so Griffin-Lim worker processes start fast.
"""


def __getattr__(name: str):
    if name == "evaluate_run":
        from vae.evaluation.run import evaluate_run

        return evaluate_run
    raise AttributeError(f"module 'vae.evaluation' has no attribute {name!r}")
