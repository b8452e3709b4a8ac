"""The evaluators: small modules, each scoring one aspect of a checkpoint from a shared context.

Every evaluator is a module with

- ``METRICS``: ``{name: (higher is better, what it measures)}`` for the headline numbers it
  yields (the report's metric table lists them in :data:`EVALUATORS` order);
- ``evaluate(ctx: vae.evaluation.context.Context) -> dict[str, Any]``: its named values
  (headline metrics, their ``_floor``/``_real`` references and counts); empty when it does not
  apply to the checkpoint or the inputs given;
- optionally ``REFERENCES``: ``{name: other name}`` for a headline metric whose ``_floor``/``_real``
  values are the other name's (one reference shared by several metrics).

A new metric is a new module here and a line in :data:`EVALUATORS`.
"""

from __future__ import annotations

from types import ModuleType

from vae.evaluation.evaluators import held_out, mixture, reconstruction, samples, unseen_voices, voice

EVALUATORS: tuple[ModuleType, ...] = (samples, reconstruction, voice, held_out, unseen_voices, mixture)

METRICS: dict[str, tuple[bool, str]] = {name: spec for ev in EVALUATORS for name, spec in ev.METRICS.items()}

REFERENCES: dict[str, str] = {name: ref for ev in EVALUATORS for name, ref in getattr(ev, "REFERENCES", {}).items()}
