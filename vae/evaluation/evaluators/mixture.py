"""Whether a mixture prior's components hold one digit each."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.config import N_DIGITS
from vae.evaluation.context import Context

METRICS: dict[str, tuple[bool, str]] = {
    "component_purity": (True, "test clips whose mixture component's majority digit is their own"),
}


def evaluate(ctx: Context) -> dict[str, Any]:
    """``component_purity`` for a prior with components (mixture, tied); nothing for another."""
    if ctx.components is None:
        return {}
    return {"component_purity": component_purity(ctx.components, ctx.digits, ctx.loaded.model.prior.components)}


def component_purity(components: np.ndarray, digits: np.ndarray, k: int) -> float:
    """Share of clips in a component whose majority digit is theirs."""
    table = component_table(components, digits, k)
    return float(table.max(axis=0).sum() / max(table.sum(), 1))


def component_table(components: np.ndarray, digits: np.ndarray, k: int) -> np.ndarray:
    """Counts ``[digit, component]``."""
    table = np.zeros((N_DIGITS, k), np.int64)
    np.add.at(table, (np.asarray(digits, np.int64), np.asarray(components, np.int64)), 1)
    return table
