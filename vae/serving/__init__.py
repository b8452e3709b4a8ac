"""The generation service (Ray Serve) and its listening page: see :mod:`vae.serving.app`.

``serve run vae.serving:build_app checkpoint=URI`` or ``python -m jobs.serve --checkpoint URI``;
``cluster/serve.yaml`` deploys it with ``serve deploy``.
"""

from vae.serving.app import BadRequest, VaeService, application, build_app, start

__all__ = ["BadRequest", "VaeService", "application", "build_app", "start"]
