"""Entry points, each ``python -m jobs.<name>`` (or ``fsdd-vae <name>``), the same command locally and
under ``ray job submit``.

A job's console holds its own lines; TensorFlow's and Ray's start-up and internal lines show only with
``--verbose`` (:mod:`vae.console`). No job imports TensorFlow or Ray before its arguments are parsed.
"""
