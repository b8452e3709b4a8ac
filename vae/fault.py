"""The test-only fault switch (:class:`vae.config.FaultConfig`): a worker that exits hard, once."""

from __future__ import annotations

import os
from collections.abc import Callable

from vae import storage
from vae.config import FaultConfig


def maybe_fault(fault: FaultConfig, epoch: int, rank: int, run_dir: str, say: Callable[[str], None]) -> None:
    """Exit this process at the start of ``epoch`` if the switch names it and this ``rank``, leaving
    a marker in ``run_dir`` so that the retry runs on."""
    if fault.epoch != epoch or fault.rank != rank:
        return
    marker = storage.join(run_dir, f"fault_fired_epoch{epoch}_rank{rank}")
    if storage.exists(marker):
        return
    import ray.train

    # Die only once the controller has registered the last checkpoint, so the test is deterministic:
    # a crash in the gap would (correctly) restart from the checkpoint before it.
    ray.train.get_all_reported_checkpoints(timeout_s=120)
    storage.write_text(marker, f"worker rank {rank} exited on purpose at the start of epoch {epoch}\n")
    say(f"[fault switch] rank {rank} exiting at the start of epoch {epoch}")
    os._exit(1)
