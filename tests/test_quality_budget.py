"""The budget benchmark's one long run stands for its short runs: each budget keeps what a run of it keeps."""

import dataclasses

import pytest

from benchmarks.quality import demo_overrides
from benchmarks.quality_budget import within
from vae.config import DemoConfig, RunConfig
from vae.search_space import apply_overrides


def _run(val_by_epoch: dict[int, float], seconds_per_epoch: float, every: int) -> list[tuple[str, dict]]:
    history = [{"epoch": e, "elapsed_s": e * seconds_per_epoch} for e in sorted(val_by_epoch)]
    return [
        (f"run/checkpoint_{e:04d}", {"epoch": e, "val_recon_mse": v, "history": history[:e]})
        for e, v in sorted(val_by_epoch.items())
        if e % every == 0
    ]


def test_each_budget_keeps_the_best_checkpoint_written_within_it():
    losses = {e: 1.0 / e for e in range(1, 21)} | {20: 0.5, 15: 0.01}  # best at 15; the last one is worse
    checkpoints = _run(losses, seconds_per_epoch=10.0, every=5)
    assert within(checkpoints, 59.0)[:2] == (5, "run/checkpoint_0005")
    assert within(checkpoints, 129.0)[:2] == (12, "run/checkpoint_0010")
    epochs, uri, metrics = within(checkpoints, 10_000.0)
    assert (epochs, uri, metrics["epoch"]) == (20, "run/checkpoint_0015", 15)


def test_a_budget_shorter_than_the_first_checkpoint_says_so():
    with pytest.raises(SystemExit, match="no checkpoint within 40 s"):
        within(_run({e: 1.0 for e in range(1, 11)}, 10.0, every=5), 40.0)


def test_the_demo_variant_trains_what_make_demo_trains():
    demo = DemoConfig().run_config()
    made = apply_overrides(RunConfig(), demo_overrides())
    for section in ("model", "loss", "prior", "sampling", "features"):
        assert getattr(made, section) == getattr(demo, section), section
    keep = ("epochs", "time_budget_s", "seed", "checkpoint_every", "held_out_speaker")
    assert dataclasses.replace(made.train, **{k: getattr(demo.train, k) for k in keep}) == demo.train
