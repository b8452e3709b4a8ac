"""The Ray Train worker: one loop per worker, shared by ``jobs.train`` and every sweep trial.

What makes N workers x batch B take the same step as 1 worker x batch N*B:
per-example losses summed and divided by the GLOBAL batch size, gradients
all-reduced by the optimizer inside ``strategy.run``, BatchNorm synchronised
across replicas, and the sampling noise of each clip a function of
(seed, epoch, clip id) rather than of which worker happens to see it.

The driver (:mod:`vae.training`) hands the loop everything it needs in :func:`loop_config`,
including what measures a checkpoint for the sweep objective (:class:`vae.objective.Ranking`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae import console, tracking
from vae.config import N_DIGITS, FaultConfig, RunConfig, from_dict, to_dict
from vae.errors import UserError
from vae.fault import maybe_fault
from vae.latent_stats import add_latent_sums, empty_latent_sums, latent_stats_from_sums
from vae.objective import OBJECTIVE, Ranking, objective

TRAIN, VAL = "train", "val"


class TrainingError(UserError, RuntimeError):
    """A run cannot start or did not finish; the message names the run and what to do."""


def example_noise(ids, epoch: int, seed: int, samples: int, dim: int) -> np.ndarray:
    """Standard-normal noise [samples, batch, dim], a function of (seed, epoch, clip id) only."""
    keys = [zlib.crc32(str(i).encode()) for i in ids]
    eps = [np.random.default_rng([seed, epoch, k]).standard_normal((samples, dim)) for k in keys]
    return np.stack(eps, axis=1).astype(np.float32)


def make_optimizer(train_cfg, variables):
    """Adam at ``learning_rate``, built for ``variables``, with ``weight_decay`` on the kernels among them only;
    the training loops set each epoch's rate (``TrainConfig.learning_rate_at``)."""
    import keras

    opt = keras.optimizers.Adam(train_cfg.learning_rate, weight_decay=train_cfg.weight_decay or None)
    if train_cfg.weight_decay:
        opt.exclude_from_weight_decay(var_list=[v for v in variables if v.name != "kernel"])
    if train_cfg.mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(variables)
    return opt


def loop_config(
    run_cfg: RunConfig,
    run_dir: str,
    num_train_rows: int,
    *,
    ranking: Ranking = Ranking(),
    fault: FaultConfig | None = None,
) -> dict[str, Any]:
    """The ``train_loop_config`` of :func:`train_loop_per_worker`: plain data, and the ranking with its
    scorer. The test-only fault switch travels here, beside the RunConfig, so no saved config carries it."""
    return {
        "run_config": to_dict(run_cfg),
        "ranking": ranking,
        "fault": to_dict(fault or FaultConfig()),
        "run_dir": run_dir,
        "num_train_rows": int(num_train_rows),
        "tracking": tracking.mlflow_settings(),  # workers do not share the driver's environment
    }


def _say(message: str) -> None:
    """One progress line from a Train worker. Not print(): Ray Train 2.60 patches it in workers to
    log *and* echo, so every line reached the driver twice."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def pack(tree: dict[str, Any]) -> np.ndarray:
    """Named arrays (dicts of them nested to any depth) as one float64 vector, so one all-reduce carries them all."""
    leaves = []

    def collect(node: dict[str, Any]) -> None:
        for value in node.values():
            collect(value) if isinstance(value, dict) else leaves.append(np.asarray(value, np.float64).ravel())

    collect(tree)
    return np.concatenate(leaves) if leaves else np.zeros(0)


def unpack(vector: np.ndarray, like: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`pack`: ``vector`` cut into arrays of the names, nesting and shapes of ``like``."""
    offset = 0

    def cut(node: dict[str, Any]) -> dict[str, Any]:
        nonlocal offset
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out[key] = cut(value)
                continue
            size = int(np.size(value))
            out[key] = np.asarray(vector[offset : offset + size]).reshape(np.shape(value))
            offset += size
        return out

    out = cut(like)
    if offset != len(vector):
        raise ValueError(f"packed vector has {len(vector)} values, the layout {offset}")
    return out


@dataclass
class Worker:
    """What one Ray Train worker holds for a run: its place, the model and its compiled steps, its shards."""

    run_cfg: RunConfig
    run_dir: str
    rank: int
    world: int
    steps: Any  # vae.models.DistributedSteps: the model, its optimizer and the compiled steps
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    steps_per_epoch: int
    rows_per_rank: int  # this worker's block of the table every worker's encodings are gathered in
    ranking: Ranking = Ranking()
    fault: FaultConfig = FaultConfig()
    measured: dict[str, float] = field(default_factory=dict)  # the scorer's, at the latest checkpoint
    best_ranked: float = float("inf")  # the best of what the run ranks by, at its checkpoints so far
    stale: int = 0  # checkpoints in a row since it was last bettered

    def all_reduce(self, parts: dict[str, Any]) -> dict[str, Any]:
        """``parts`` (nested named arrays) summed over every worker, in one collective."""
        import tensorflow as tf

        return unpack(self.steps.all_reduce(tf.constant(pack(parts))).numpy(), parts)

    def say(self, message: str) -> None:
        if self.rank == 0:
            _say(message)

    def measure(self, checkpoint) -> dict[str, float]:
        """The ranking's scorer's measurements (digit accuracy, voicing, ...) of this worker's local
        ``checkpoint`` (the model in memory)."""
        from vae import checkpoint as ckpt_lib

        scorer = self.ranking.scorer
        if scorer is None:
            raise TrainingError("measuring a checkpoint needs a scorer: this run's ranking has none")
        with console.quiet_log("vae.evaluation"):
            return scorer(ckpt_lib.in_memory(checkpoint.path, self.steps.model))


def start_worker(config: dict[str, Any]) -> Worker:
    """Build this worker's model, optimizer and steps under the strategy its world size needs, and read its shards."""
    import keras
    import ray.train
    import tensorflow as tf

    from vae.models import DistributedSteps, build_vae

    run_cfg = from_dict(RunConfig, config["run_config"]).validate()
    tcfg = run_cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, (os.cpu_count() or 1) // max(1, ctx.get_local_world_size()))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its setting
    keras.utils.set_random_seed(tcfg.seed)

    # One worker needs no collectives, and without them the steps can be XLA-compiled.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    steps_per_epoch = (config["num_train_rows"] // world) // tcfg.batch_size
    with strategy.scope():
        model = build_vae(
            run_cfg.features.shape,
            run_cfg.model,
            run_cfg.prior,
            run_cfg.loss,
            mixed_precision=tcfg.mixed_precision,
            seed=tcfg.seed,
            features=run_cfg.features,
        )
        optimizer = make_optimizer(tcfg, model.trainable_variables)
    return Worker(
        run_cfg=run_cfg,
        run_dir=config["run_dir"],
        rank=rank,
        world=world,
        steps=DistributedSteps(
            model,
            optimizer,
            tcfg.batch_size * world,
            strategy,
            jit_compile=tcfg.jit_compile,
            clip_norm=tcfg.clip_norm,
            fused_norm=tcfg.fused_batch_norm,
        ),
        train=load_shard(ray.train.get_dataset_shard(TRAIN)),
        val=load_shard(ray.train.get_dataset_shard(VAL)),
        steps_per_epoch=steps_per_epoch,
        rows_per_rank=-(-config["num_train_rows"] // world) + 1,
        ranking=config.get("ranking", Ranking()),
        fault=from_dict(FaultConfig, config.get("fault", {})),
    )


def restore(worker: Worker) -> tuple[int, dict]:
    """Epochs done and metrics of the checkpoint this run goes on from (after a failure or --resume)."""
    import ray.train

    from vae import checkpoint as ckpt_lib

    if ray.train.get_checkpoint() is None:
        return 0, {}
    # Ray hands over its latest checkpoint; go on from the newest one that verifies (that one, unless damaged).
    steps = worker.steps
    start_epoch, metrics, restored = ckpt_lib.restore_newest_intact(
        worker.run_dir, steps.model, steps.optimizer, worker.say
    )
    worker.say(f"resuming from {restored} after epoch {start_epoch}")
    return start_epoch, metrics


def load_shard(shard) -> dict[str, np.ndarray]:
    """This worker's Ray Data shard read once into memory, sorted by clip id (so a run does not
    depend on the order blocks arrive in). Every epoch then shuffles and slices it in numpy:
    streaming it again would re-read and re-copy the Parquet every epoch on the very cores the
    step needs (docs/benchmarks.md). FSDD's 3,000 clips of
    ``default`` features are 150 MB."""
    parts = list(shard.iter_batches(batch_size=1024, batch_format="numpy"))
    if not parts:
        return {}
    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    order = np.argsort(columns["id"], kind="stable")
    return {key: value[order] for key, value in columns.items()}


def shard_rows(data: dict[str, np.ndarray]) -> int:
    return len(data["id"]) if data else 0


def batches(data: dict[str, np.ndarray], batch_size: int, order: np.ndarray | None = None):
    """``data`` in batches of ``batch_size`` rows, in ``order`` (default: as stored; the last batch may be short)."""
    order = np.arange(shard_rows(data)) if order is None else order
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        yield {key: value[rows] for key, value in data.items()}


def epoch_order(rows: int, steps: int, batch_size: int, seed: int, epoch: int, rank: int = 0) -> np.ndarray:
    """The rows one worker trains on in ``epoch``: a permutation of its shard, a function of
    (seed, epoch, rank), cut to ``steps`` full batches."""
    if rows < steps * batch_size:
        raise TrainingError(
            f"worker {rank}'s shard holds {rows} clips, fewer than the {steps} batches of {batch_size} every worker must "
            "take (a worker stepping alone would wait forever in the gradient all-reduce)"
        )
    return np.random.default_rng([seed, epoch, rank]).permutation(rows)[: steps * batch_size]


def train_epoch(
    steps, data, run_cfg, epoch: int, rank: int, steps_per_epoch: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over this worker's shard (in memory): summed loss terms and each step's gradient norm;
    ``progress``: a line every 20 steps (rank 0, with --verbose)."""
    import tensorflow as tf

    from vae.models import TERMS

    tcfg, dim = run_cfg.train, run_cfg.model.noise_dim(run_cfg.features.shape)
    kl_weight = tf.constant(run_cfg.loss.kl_weight(epoch), tf.float32)
    sums, norms = np.zeros(len(TERMS)), []
    order = epoch_order(shard_rows(data), steps_per_epoch, tcfg.batch_size, tcfg.seed, epoch, rank)
    for batch in batches(data, tcfg.batch_size, order):
        eps = example_noise(batch["id"], epoch, tcfg.seed, run_cfg.loss.kl_samples, dim)
        step_sums, norm = steps.train(
            batch["spectrogram"], batch["digit"].astype(np.int32), eps, kl_weight, batch.get("f0")
        )
        sums += step_sums.numpy()
        norms.append(float(norm))
        if progress and rank == 0 and len(norms) % 20 == 0:
            _say(f"epoch {epoch}: step {len(norms)}/{steps_per_epoch}")
    return sums, np.array(norms)


def gradient_norm_metrics(norms: np.ndarray, clip_norm: float) -> dict[str, float]:
    """An epoch's gradient norms in brief: median and largest of the finite ones, the share of steps
    clipped, and how many steps had a non-finite norm (a mixed-precision loss scale that overflowed,
    which the optimizer skips; in float32, a step that went wrong)."""
    finite = norms[np.isfinite(norms)]
    out: dict[str, float] = {"nonfinite_steps": int(len(norms) - len(finite))}
    if len(finite):
        out.update(grad_norm_median=float(np.median(finite)), grad_norm_max=float(finite.max()))
        out["clipped_steps"] = float(np.mean(finite > clip_norm)) if clip_norm > 0 else 0.0
    return out


def norm_metrics(steps, norms: np.ndarray) -> dict[str, float]:
    """:func:`gradient_norm_metrics` of ``steps``' epoch, or nothing where the steps do not compute the norm."""
    return gradient_norm_metrics(norms, steps.clip_norm) if steps.computes_norm else {}


def _validate(steps, data, run_cfg) -> dict[str, np.ndarray]:
    """Summed loss terms and the clip count over this worker's validation shard."""
    from vae.models import TERMS

    tcfg, dim = run_cfg.train, run_cfg.model.noise_dim(run_cfg.features.shape)
    sums = np.zeros(len(TERMS))
    for batch in batches(data, tcfg.batch_size):
        eps = example_noise(batch["id"], 0, tcfg.seed, run_cfg.loss.kl_samples, dim)
        sums += steps.evaluate(batch["spectrogram"], batch["digit"].astype(np.int32), eps, batch.get("f0")).numpy()
    return {"sums": sums, "count": np.array([shard_rows(data)])}


def _encode_shard(worker: Worker) -> dict[str, np.ndarray]:
    """Latent sums by digit over this worker's train shard, and its posterior means placed in
    this rank's block of a zero table, so that the all-reduce (a sum) gathers every worker's."""
    run_cfg, model, rank, block = worker.run_cfg, worker.steps.model, worker.rank, worker.rows_per_rank
    sums = empty_latent_sums(run_cfg.model.latent_dim, model.prior.components)
    table = np.zeros((worker.world * block, run_cfg.model.latent_dim + 2))  # mu, digit, "row used"
    row = rank * block
    for batch in batches(worker.train, max(run_cfg.train.batch_size, 64)):
        mu = worker.steps.encode(batch["spectrogram"], batch["digit"].astype(np.int32)).numpy()
        add_latent_sums(sums, mu, batch, model.prior.assign(mu))
        if row + len(mu) > (rank + 1) * block:
            raise TrainingError(f"worker {rank}'s train shard holds more than the {block} rows expected")
        table[row : row + len(mu)] = np.column_stack([mu, batch["digit"], np.ones(len(mu))])
        row += len(mu)
    return {**sums, "latents": table}


def _epoch_metrics(epoch: int, steps_done: int, total: dict, train_time: float) -> dict[str, Any]:
    from vae.models import TERMS

    n_train, val_count = float(total["train_clips"][0]), float(total["val"]["count"][0])
    metrics: dict[str, Any] = {
        "epoch": epoch,
        "steps": steps_done,
        "train_clips": int(n_train),
        "val_clips": int(val_count),
    }
    metrics.update({f"train_{key}": float(v) for key, v in zip(TERMS, total["train"] / max(n_train, 1))})
    # A diverged epoch must rank last among checkpoints, not poison the ordering with NaN.
    val_mean = total["val"]["sums"] / max(val_count, 1)
    metrics.update({f"val_{key}": float(v) if np.isfinite(v) else float("inf") for key, v in zip(TERMS, val_mean)})
    metrics["train_clips_per_s"] = float(n_train / train_time)
    return metrics


def initial_val_loss(worker: Worker) -> float:
    """The untrained model's validation loss: the baseline every later epoch is compared with."""
    val = worker.all_reduce(_validate(worker.steps, worker.val, worker.run_cfg))
    return float(val["sums"][0] / max(val["count"][0], 1))


def run_epoch(worker: Worker, epoch: int, started: float, elapsed_before: float) -> tuple[dict[str, Any], bool]:
    """Train one epoch on this worker's shard and validate: the epoch's metrics, summed over every
    worker (so every worker takes the same decisions from the same numbers), and whether the time
    budget (counted from ``started``) is spent before another epoch could finish. The learning rate
    follows the schedule at ``elapsed_before``, the seconds every worker agreed on after the last epoch."""
    run_cfg, tcfg = worker.run_cfg, worker.run_cfg.train
    learning_rate = tcfg.learning_rate_at(epoch, elapsed_before)
    worker.steps.optimizer.learning_rate = learning_rate
    t0 = time.perf_counter()
    train_sums, norms = train_epoch(
        worker.steps, worker.train, run_cfg, epoch, worker.rank, worker.steps_per_epoch, console.is_verbose()
    )
    steps_done = len(norms)
    train_time = time.perf_counter() - t0
    val = _validate(worker.steps, worker.val, run_cfg)
    val_time = time.perf_counter() - t0 - train_time
    total = worker.all_reduce(
        {
            "train": train_sums,
            "train_clips": np.array([steps_done * tcfg.batch_size]),
            "val": val,
            "clock": np.array([time.perf_counter() - started, time.perf_counter() - t0]),
        }
    )
    elapsed, epoch_time = total["clock"] / worker.world
    out_of_time = tcfg.time_budget_s > 0 and epoch < tcfg.epochs and elapsed + epoch_time > tcfg.time_budget_s
    metrics = _epoch_metrics(epoch, steps_done, total, train_time)
    metrics.update(
        kl_weight=run_cfg.loss.kl_weight(epoch), learning_rate=learning_rate, stopped_by_time_budget=bool(out_of_time)
    )
    metrics.update(norm_metrics(worker.steps, norms))
    metrics.update(elapsed_s=float(elapsed), train_time_s=train_time, validate_time_s=val_time, checkpoint_time_s=0.0)
    return metrics, bool(out_of_time)


def _recentre_digits(worker: Worker) -> None:
    """A model with ``erase_digit``: move each digit's mean code by the mean its train clips' codes still have,
    encoded as inference encodes them (over every worker's shard), so that every digit's codes of the train
    split have mean zero. Training keeps the means as running averages of training-mode batches, which lag
    the weights and differ from inference by BatchNorm's moments; a probe reads what that leaves."""
    model = worker.steps.model
    if not model.model_cfg.erase_digit:
        return
    sums = {"mu": np.zeros((N_DIGITS, model.model_cfg.latent_dim)), "count": np.zeros(N_DIGITS)}
    for batch in batches(worker.train, max(worker.run_cfg.train.batch_size, 64)):
        digits = batch["digit"].astype(np.int32)
        np.add.at(sums["mu"], digits, worker.steps.encode(batch["spectrogram"], digits).numpy())
        np.add.at(sums["count"], digits, 1)
    total = worker.all_reduce(sums)
    model.eraser.recentre(total["mu"] / np.maximum(total["count"], 1)[:, None])


def checkpoint_epoch(worker: Worker, epoch: int, metrics: dict[str, Any], history: list[dict], epoch_started: float):
    """Gather every worker's encodings; rank 0 writes the checkpoint (other ranks get None)."""
    t0 = time.perf_counter()
    _recentre_digits(worker)
    latent = worker.all_reduce(_encode_shard(worker))
    checkpoint = None
    if worker.rank == 0:
        metrics["epoch_time_s"] = float(time.perf_counter() - epoch_started)  # as saved; the reported one is final
        steps = worker.steps
        checkpoint = _checkpoint(
            steps.model, steps.optimizer, epoch, worker.run_cfg, {**metrics, "history": history}, latent
        )
    metrics["checkpoint_time_s"] = time.perf_counter() - t0
    return checkpoint


def rank_epoch(worker: Worker, metrics: dict[str, Any], checkpoint) -> None:
    """Add what the run ranks by to ``metrics`` when that is the objective: the scorer's measurements
    where there is a checkpoint (rank 0's), the objective at every epoch; an epoch without a checkpoint
    carries the latest measurements, so its objective has the same terms. The checkpoint's own metrics
    get them too, so a run's checkpoints are ranked again alike when it is resumed or read back."""
    from vae import checkpoint as ckpt_lib

    ranking = worker.ranking
    if ranking.metric != OBJECTIVE:
        return
    if ranking.scorer is not None and checkpoint is not None:
        worker.measured = worker.measure(checkpoint)
        metrics.update(worker.measured)
    measured = worker.measured
    metrics["val_unexplained_variance"] = metrics["val_recon_mse"] / ranking.val_variance
    metrics[OBJECTIVE] = objective(metrics["val_recon_mse"], ranking.val_variance, measured, ranking.voicing_floor)
    if checkpoint is not None:
        ranked = {key: metrics[key] for key in (*measured, "val_unexplained_variance", OBJECTIVE)}
        ckpt_lib.write_json(checkpoint.path, ckpt_lib.METRICS, {**ckpt_lib.read_metrics(checkpoint.path), **ranked})


def no_longer_improving(worker: Worker, metrics: dict[str, Any], checkpoint_epoch: bool) -> bool:
    """At a checkpoint epoch (every worker's, though rank 0 alone writes the checkpoint), whether what the run
    ranks by has not bettered its best for ``train.patience`` checkpoints in a row: rank 0's reading (it
    alone holds a scorer's measurements), given to every worker in one collective."""
    patience = worker.run_cfg.train.patience
    if not patience or not checkpoint_epoch:
        return False
    value = metrics.get(worker.ranking.metric)
    if worker.rank == 0 and value is not None:
        if value < worker.best_ranked:
            worker.best_ranked, worker.stale = float(value), 0
        else:
            worker.stale += 1
    stop = worker.rank == 0 and worker.stale >= patience
    return bool(worker.all_reduce({"stop": np.array([float(stop)])})["stop"][0] > 0)


def _epoch_line(epoch: int, tcfg, m: dict[str, Any]) -> str:
    """An epoch's progress: with a time budget the cap on epochs and the seconds spent of the budget."""
    where = f"epoch {epoch}/{tcfg.epochs}"
    if tcfg.time_budget_s > 0:
        where = f"epoch {epoch} (cap {tcfg.epochs}), {m['elapsed_s']:.0f}/{tcfg.time_budget_s:.0f} s"
    return (
        f"{where}: train loss {m['train_loss']:.4g} (recon_mse {m['train_recon_mse']:.4g}, "
        f"kl {m['train_kl']:.4g}) | val loss {m['val_loss']:.4g} (recon_mse {m['val_recon_mse']:.4g}, "
        f"kl {m['val_kl']:.4g}) | {m['train_clips_per_s']:.1f} clips/s, {m['epoch_time_s']:.1f} s"
        + (
            f" | {m['clipped_steps']:.0%} of steps clipped (max gradient norm {m['grad_norm_max']:.3g})"
            if m.get("clipped_steps")
            else ""
        )
        + (f" | {m['nonfinite_steps']} steps with a non-finite gradient" if m.get("nonfinite_steps") else "")
        + (f" | samples heard as their digit {m['digit_accuracy']:.2f}" if "digit_accuracy" in m else "")
    )


def report(worker: Worker, tracker, epoch: int, metrics: dict[str, Any], checkpoint, say: bool = True) -> None:
    """Hand the epoch's metrics (and rank 0's checkpoint) to the trackers and Ray Train, then drop the
    local copy; ``say``: print the epoch's line too."""
    import ray.train

    from vae import checkpoint as ckpt_lib

    name = f"checkpoint_{epoch:04d}"
    if checkpoint is not None:
        name = ckpt_lib.dir_name(worker.run_dir, epoch)  # never the folder of a damaged checkpoint gone back past
    if say:
        worker.say(_epoch_line(epoch, worker.run_cfg.train, metrics))
    tracker.log_epoch(epoch, metrics)
    if checkpoint is not None:
        tracker.log_checkpoint_samples(
            epoch, worker.steps.model, checkpoint.path, worker.run_cfg.train.tracking_samples
        )
    try:
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
    finally:
        if checkpoint is not None:
            shutil.rmtree(checkpoint.path, ignore_errors=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume if Ray hands over a checkpoint, then per epoch train on this
    worker's 'train' shard, validate on its 'val' shard, all-reduce, and report metrics, with at
    checkpoint epochs (from rank 0) a checkpoint holding the latent statistics and the ex-post
    mixtures fitted to every worker's encodings. ``config``: :func:`loop_config`."""
    worker = start_worker(config)
    tcfg = worker.run_cfg.train
    start_epoch, restored = restore(worker)
    baseline = initial_val_loss(worker) if start_epoch == 0 else restored.get("initial_val_loss")
    history = list(restored.get("history", []))  # every epoch's metrics: curves survive keeping only the best few
    # Rank 0 logs, other ranks get a no-op.
    tracker = tracking.worker_tracker(config, worker.rank, worker.run_cfg, resumed_from=start_epoch)
    started, elapsed, lines = time.perf_counter(), 0.0, console.Every()
    for epoch in range(start_epoch + 1, tcfg.epochs + 1):
        maybe_fault(worker.fault, epoch, worker.rank, worker.run_dir, _say)
        t0 = time.perf_counter()
        metrics, out_of_time = run_epoch(worker, epoch, started, elapsed)
        elapsed = metrics["elapsed_s"]
        metrics.update(resumed_from_epoch=start_epoch, initial_val_loss=baseline)
        history.append(metrics)
        checkpoint = None
        checkpointing = out_of_time or epoch == tcfg.epochs or epoch % tcfg.checkpoint_every == 0
        if checkpointing:
            checkpoint = checkpoint_epoch(worker, epoch, metrics, history, t0)
        rank_epoch(worker, metrics, checkpoint)
        stalled = no_longer_improving(worker, metrics, checkpointing)
        metrics.update(epoch_time_s=float(time.perf_counter() - t0), stopped_by_patience=stalled)
        report(
            worker, tracker, epoch, metrics, checkpoint, lines.due(last=out_of_time or stalled or epoch == tcfg.epochs)
        )
        if out_of_time:
            worker.say(f"stopping after epoch {epoch}: another would pass the {tcfg.time_budget_s:.0f} s time budget")
            break
        if stalled:
            worker.say(
                f"stopping after epoch {epoch}: {worker.ranking.metric} has not bettered its best "
                f"({worker.best_ranked:.4g}) for {tcfg.patience} checkpoints (train.patience)"
            )
            break
    tracker.close()


def _checkpoint(model, optimizer, epoch: int, run_cfg: RunConfig, metrics: dict, latent: dict):
    """A Ray checkpoint in a local temporary folder: weights, optimizer, configs, metrics, the latent
    statistics and the ex-post mixtures of every worker's encodings (``latent``, all-reduced)."""
    import ray.train

    from vae import checkpoint as ckpt_lib
    from vae.generation import fit_expost

    table = latent.pop("latents")
    used = table[:, -1] > 0.5
    stats = latent_stats_from_sums(latent, run_cfg.prior.kind)
    expost = fit_expost(table[used, :-2], table[used, -2], run_cfg.sampling, seed=run_cfg.train.seed)
    directory = tempfile.mkdtemp(prefix="fsdd-vae-")
    ckpt_lib.save(directory, model, optimizer, epoch, run_cfg, metrics, stats, expost)
    return ray.train.Checkpoint.from_directory(directory)
