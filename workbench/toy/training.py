"""Train a toy transformer on Bigram-Backcopy, probing as it goes; checkpoint and resume.

Every step draws a fresh batch whose seed is derived from ``(seed, step)``, so a resumed
run sees exactly the batches an uninterrupted one would. Every ``probe_every`` steps the
probes of :mod:`workbench.toy.probes` run on a fixed held-out batch and the attention
pattern of its first sequence is kept for scrubbing through training.

On disk (``out_dir``)::

    config.json              TrainConfig and ToyConfig
    task.json, task.safetensors   the BB task (chars; bigram, unigram, triggers)
    probes.csv               one row per probe step
    snapshots.safetensors    attention patterns per probe step, "step_{n}/L{l}"
    checkpoint/              model.safetensors, optim.pt, state.json (latest only)
    .workbench-run.json      the manifest: the names training writes here

Training removes only the names in its manifest (``resume=False``), and refuses a
non-empty folder it did not write unless ``overwrite=True``.

Example:
    >>> result = train(TrainConfig(steps=2000), out_dir="runs/bb_adam")
    >>> result.probes[["step", "backcopy_excess", "attn_bos_L0"]].tail()
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save, save_file
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.storage import atomic_dir, atomic_write, atomic_write_text
from workbench.toy.bigram_backcopy import PAPER_CHARS, BBTask
from workbench.toy.model import JSONConfig, ToyConfig, ToyTransformer, layers_spec, parse_layers
from workbench.toy.probes import PROBE_STYLES, capture, probes_from_capture

__all__ = [
    "ARCHITECTURES",
    "AUTHORS_ADAMW",
    "AUTHORS_SETTINGS",
    "AUTHORS_SGD",
    "OPTIMIZERS",
    "PAPER_AUTHORS_SETTINGS",
    "PAPER_PEAK_SETTINGS",
    "PAPER_SETTINGS",
    "PEAK_SETTINGS",
    "CorruptCheckpointError",
    "ResumeError",
    "RunFolderError",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "authors_settings",
    "load_run",
    "optimizer_variants",
    "peak_settings",
    "settings",
    "train",
    "train_variants",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR = {"adamw": 3e-4, "sgd": 0.1}


class TrainConfigError(WorkbenchError, ValueError):
    """Training was configured with settings that cannot work."""


class ResumeError(WorkbenchError, RuntimeError):
    """A run folder holds a run that does not match the one asked for."""


class RunFolderError(WorkbenchError, FileExistsError):
    """``out_dir`` holds files that training did not write; it will not remove them."""


class CorruptCheckpointError(ResumeError):
    """A checkpoint file is truncated or unreadable."""


@dataclass(frozen=True)
class TrainConfig(JSONConfig):
    """Everything that decides a training run (apart from the task's text).

    Attributes:
        n_layers, d_model, d_mlp, attention, no_attn_layers, no_mlp_layers, pos_init, pos_std,
        init, layers, ln_bias:
            the model, see :class:`workbench.toy.model.ToyConfig`; ``layers`` (e.g.
            ``"TF,TF,MLP"``) decides ``n_layers``, ``no_attn_layers`` and ``no_mlp_layers``.
        seq_len: tokens per sequence, BOS included; also the position-table size.
        batch_size: sequences per step.
        steps: optimiser steps in total (a resumed run continues up to this).
        optimizer: ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate; ``None`` picks 3e-4 for AdamW and 0.1 for SGD (momentum 0.9).
        betas: AdamW's betas; the authors use (0.9, 0.99), PyTorch's default is (0.9, 0.999).
        lr_schedule: ``"constant"``, or ``"cosine"`` decay to 0 at ``steps``.
        warmup_steps: linear warm-up from 0 over these first steps.
        weight_decay: decoupled for AdamW, L2 for SGD.
        probe_every: steps between probes (step 0 is always probed).
        probe_batch: sequences in the fixed held-out probe batch.
        snapshot_len: the attention pattern kept per probe step is cropped to this many
            positions, to keep the scrub data small.
        checkpoint_every: steps between checkpoints when ``out_dir`` is given.
        seed: decides the initial weights, every batch and the probe batch.
        bos_loss: train the BOS position's own prediction (of the first character), as the
            paper's code does. False leaves it out of the loss, to test how much of the BOS
            residual norm's growth that one prediction drives.
        case_sensitive: when ``train`` builds the task itself, count bigrams over the
            authors' 65 case-sensitive characters (:data:`PAPER_CHARS`) instead of the
            lower-case default. A ``task`` passed to ``train`` wins.
        probe_style: ``"project"`` or ``"authors"``: which definitions the probes use (see
            :mod:`workbench.toy.probes`).
    """

    n_layers: int = 1
    d_model: int = 64
    d_mlp: int = 256
    attention: Literal["softmax", "relu"] = "softmax"
    no_attn_layers: tuple[int, ...] = ()
    no_mlp_layers: tuple[int, ...] = ()
    pos_init: Literal["normal", "sinusoidal", "fourier", "harmonic"] = "normal"
    pos_std: float = 0.02
    init: Literal["small", "torch"] = "small"
    layers: str | None = None
    ln_bias: bool = False
    seq_len: int = 256
    batch_size: int = 32
    steps: int = 2000
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float | None = None
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    probe_every: int = 50
    probe_batch: int = 32
    snapshot_len: int = 64
    checkpoint_every: int = 500
    seed: int = 0
    bos_loss: bool = True
    case_sensitive: bool = False
    probe_style: Literal["project", "authors"] = "project"

    error: ClassVar[type[Exception]] = TrainConfigError

    def __post_init__(self) -> None:
        if self.layers is not None:  # the spec decides the three layer fields
            n, no_attn, no_mlp = parse_layers(self.layers)
            object.__setattr__(self, "n_layers", n)
            object.__setattr__(self, "no_attn_layers", no_attn)
            object.__setattr__(self, "no_mlp_layers", no_mlp)
        object.__setattr__(self, "no_attn_layers", tuple(self.no_attn_layers))
        object.__setattr__(self, "no_mlp_layers", tuple(self.no_mlp_layers))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise TrainConfigError(f"betas must be two numbers in [0, 1), got {self.betas}.")
        if self.probe_style not in PROBE_STYLES:
            raise TrainConfigError(
                f"Unknown probe_style {self.probe_style!r}; choose one of {PROBE_STYLES}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise TrainConfigError(
                f"Unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}."
            )
        for name in ("steps", "probe_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("batch_size", "probe_batch", "snapshot_len"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.lr is not None and not self.lr > 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TrainConfigError(
                f"Unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}."
            )
        if self.warmup_steps < 0:
            raise TrainConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        self.model_config(vocab_size=2)  # validates the model fields with their own errors

    @property
    def architecture(self) -> str:
        """The layer kinds as a spec, e.g. ``"TF,TF,MLP"``."""
        return layers_spec(self.n_layers, self.no_attn_layers, self.no_mlp_layers)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based); a function of the step alone, so
        a resumed run follows the same schedule."""
        lr = self.learning_rate
        if step < self.warmup_steps:
            return lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "cosine":
            span = max(1, self.steps - self.warmup_steps)
            return (
                lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))
            )
        return lr

    def model_config(self, vocab_size: int) -> ToyConfig:
        return ToyConfig(
            vocab_size=vocab_size,
            n_layers=self.n_layers,
            d_model=self.d_model,
            d_mlp=self.d_mlp,
            max_seq_len=self.seq_len,
            attention=self.attention,
            no_attn_layers=self.no_attn_layers,
            no_mlp_layers=self.no_mlp_layers,
            pos_init=self.pos_init,
            pos_std=self.pos_std,
            init=self.init,
            ln_bias=self.ln_bias,
        )

    def make_task(self) -> BBTask:
        """The default task for this config: lower-case, or the authors' cased characters."""
        return BBTask.from_prose(chars=PAPER_CHARS) if self.case_sensitive else BBTask.from_prose()


# Paper-scale settings: the paper's recipe (1 layer, AdamW 3e-4, sequences of 256) at GPU
# scale. The width, batch and step count are this project's choice for a GPU run (they are
# not copied from the paper); on a CPU this takes hours. Vary it with
# ``dataclasses.replace(PAPER_SETTINGS, optimizer="sgd")`` or ``settings(True, ...)``.
PAPER_SETTINGS = TrainConfig(
    d_model=256, d_mlp=1024, batch_size=512, steps=10_000, probe_every=100, probe_batch=64
)


# CPU settings: meet the paper's end state (backcopy excess < 1e-3 nats, ~all attention on
# BOS at non-trigger queries) within 10 minutes on 2 cores. Measured choices, not the
# paper's: many small steps (batch 8) at AdamW 1e-3, a width of 128, and a position table
# that starts as orthogonal sines and cosines 5x larger than the other weights. With random
# positions at std 0.02 (the earlier default), a few late positions learned to look 3 or 5
# tokens back (right inside "x t x t" loops, wrong elsewhere) and the backcopy risk stalled
# near 1e-2 nats. SGD variants should pass ``lr=None`` to get SGD's own default.
CPU_SETTINGS = TrainConfig(
    d_model=128,
    d_mlp=512,
    batch_size=8,
    lr=1e-3,
    pos_init="harmonic",
    pos_std=0.1,
    steps=15_000,
    probe_every=250,
)


# MLP+TF+MLP (attention only at layer 1) with PyTorch's default init, this project's first
# residual-peak setting (issue 5). It is NOT the authors' peak architecture: their appendix
# shows MLP+TF+MLP with only a small BOS excess (their optimiser comparison uses 3xTF, their
# minimal peak structure is 2xTF+MLP; see AUTHORS_SETTINGS). Kept for comparison.
# Measured choices, not the paper's: width 64, sequences of 64 and batches of 32 at AdamW
# 1e-3. With them about 0.85 of the attention is on BOS at layer 1 after 1,000 steps, and
# with AdamW the BOS norm after layer 0 (what layer 1's attention reads) keeps rising while
# the other tokens' stays flat. With the small init of CPU_SETTINGS the layer-1 sink mass
# still wanders between 0.3 and 0.5 after 10,000 steps, and the BOS norm stays below the
# other tokens'.
PEAK_SETTINGS = TrainConfig(
    n_layers=3,
    no_attn_layers=(0, 2),
    d_model=64,
    d_mlp=256,
    seq_len=64,
    batch_size=32,
    lr=1e-3,
    init="torch",
    pos_std=1.0,
    steps=10_000,
    probe_every=500,
)

# MLP+TF+MLP at the paper's scale (GPU), with this project's optimiser settings. For the
# authors' recipe exactly, use PAPER_AUTHORS_SETTINGS.
PAPER_PEAK_SETTINGS = replace(
    PAPER_SETTINGS, n_layers=3, no_attn_layers=(0, 2), init="torch", pos_std=1.0
)


# The authors' optimiser settings (their BBM/train_main.py and scripts), as variant fields.
AUTHORS_ADAMW: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 3e-4,
    "betas": (0.9, 0.99),
    "weight_decay": 1e-4,
}
AUTHORS_SGD: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.03,
    "momentum": 0.9,
    "weight_decay": 1e-4,
}

# The architectures of the authors' appendix comparison (BOS excess per architecture).
ARCHITECTURES = ("TF,TF,TF", "TF,TF,MLP", "MLP,TF,MLP", "Attn,TF,MLP")

# The authors' residual-peak runs exactly (BBM/scripts/3L-dynamics.sh, sgd.sh): 3xTF, one
# head, width 256, sequences of 256, batches of 512, 10,000 steps; AdamW 3e-4 with betas
# (0.9, 0.99) and weight decay 1e-4; LayerNorm with bias; PyTorch's default init
# (embeddings and positions N(0, 1)); 65 case-sensitive characters. For a GPU. The MLP's
# width (4x) is not in their scripts; it is the usual choice. Differences left: their
# vocabulary also holds an unused delimiter token, and their text is not ours.
PAPER_AUTHORS_SETTINGS = TrainConfig(
    layers="TF,TF,TF",
    d_model=256,
    d_mlp=1024,
    seq_len=256,
    batch_size=512,
    steps=10_000,
    init="torch",
    pos_std=1.0,
    ln_bias=True,
    case_sensitive=True,
    probe_style="authors",
    probe_every=100,
    probe_batch=64,
    **AUTHORS_ADAMW,
)

# The same recipe at a CPU scale (measured on 2 shared cores: see notebook 03 and the
# benchmark): width 64, sequences of 64, batches of 32. Only the scale differs.
AUTHORS_SETTINGS = replace(
    PAPER_AUTHORS_SETTINGS,
    d_model=64,
    d_mlp=256,
    seq_len=64,
    batch_size=32,
    probe_every=250,
    probe_batch=32,
)


def authors_settings(full: bool = False, **overrides: Any) -> TrainConfig:
    """:data:`AUTHORS_SETTINGS` (CPU scale), or :data:`PAPER_AUTHORS_SETTINGS` when ``full``;
    ``None`` overrides are ignored.

    Example:
        >>> cfg = authors_settings(layers="TF,TF,MLP", steps=3000)
        >>> runs = train_variants(cfg, optimizer_variants())
    """
    return _with(PAPER_AUTHORS_SETTINGS if full else AUTHORS_SETTINGS, overrides)


def optimizer_variants() -> dict[str, dict[str, Any]]:
    """The authors' comparison as :func:`train_variants` variants: AdamW, SGD + momentum,
    and ReLU attention trained with AdamW."""
    return {
        "AdamW": dict(AUTHORS_ADAMW),
        "SGD": dict(AUTHORS_SGD),
        "ReLU attn": {**AUTHORS_ADAMW, "attention": "relu"},
    }


def settings(full: bool = False, **overrides: Any) -> TrainConfig:
    """:data:`CPU_SETTINGS`, or :data:`PAPER_SETTINGS` when ``full``; ``None`` overrides are
    ignored.

    Example:
        >>> settings(steps=None, batch_size=16).batch_size  # a notebook's parameters cell
        16
    """
    return _with(PAPER_SETTINGS if full else CPU_SETTINGS, overrides)


def peak_settings(full: bool = False, **overrides: Any) -> TrainConfig:
    """:data:`PEAK_SETTINGS` (the minimal residual-peak model on a CPU), or
    :data:`PAPER_PEAK_SETTINGS` when ``full``; ``None`` overrides are ignored.

    Example:
        >>> cfg = peak_settings(steps=3000)
        >>> runs = train_variants(cfg, {"AdamW": {}, "SGD": {"optimizer": "sgd", "lr": 0.03}})
    """
    return _with(PAPER_PEAK_SETTINGS if full else PEAK_SETTINGS, overrides)


def _with(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with the overrides that are not None (a notebook's "use the default")."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainResult:
    """A finished (or resumed) run.

    Attributes:
        model: the trained model, in eval mode.
        task: the BB task it was trained on.
        config: the training config.
        probes: one row per probe step: ``step``, ``loss``, ``wall_s`` and the probe columns.
        snapshots: ``{step: [n_attn_layers, S, S]}`` float32 attention patterns of the first
            probe sequence, cropped to ``snapshot_len``.
        probe_tokens: ``[S]`` int64, the first probe sequence (cropped alike).
        out_dir: the run folder, or None for a run kept in memory.
    """

    model: ToyTransformer
    task: BBTask
    config: TrainConfig
    probes: pd.DataFrame
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    probe_tokens: torch.Tensor | None = None
    out_dir: Path | None = None

    def snapshot_labels(self) -> tuple[list[str], list[bool]]:
        """The snapshot sequence as one string per token (BOS as ``^``) and trigger flags."""
        if self.probe_tokens is None:
            return [], []
        toks = [self.task.decode([t]) for t in self.probe_tokens]
        return toks, self.task.is_trigger()[self.probe_tokens].tolist()


def _stream_seed(seed: int, stream: int, step: int) -> int:
    """An independent 63-bit seed for ``(seed, stream, step)``: no overlap between runs."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(1, np.uint64)[0] >> 1)


# The generator's cost is mostly per position, not per sequence (it loops over time and is
# vectorised over the batch), so one call draws the batches of several steps at once.
SEQUENCES_PER_DRAW = 256


def steps_per_draw(cfg: TrainConfig) -> int:
    """How many consecutive steps share one call of the generator (a function of ``cfg``)."""
    return max(1, SEQUENCES_PER_DRAW // cfg.batch_size)


def _draw(task: BBTask, cfg: TrainConfig, block: int) -> torch.Tensor:
    """``[steps_per_draw * batch_size, seq_len]``: the batches of one block of steps."""
    n = steps_per_draw(cfg)
    return task.sample(n * cfg.batch_size, cfg.seq_len, seed=_stream_seed(cfg.seed, 1, block))


def batch_for_step(task: BBTask, cfg: TrainConfig, step: int) -> torch.Tensor:
    """The training batch ``[batch_size, seq_len]`` of ``step``; the same on every resume.

    Every step gets fresh sequences: step ``s`` is slice ``s % n`` of block ``s // n``.
    """
    n = steps_per_draw(cfg)
    i = step % n
    return _draw(task, cfg, step // n)[i * cfg.batch_size : (i + 1) * cfg.batch_size]


class BatchStream:
    """The training batches in step order: :func:`batch_for_step`, each block drawn once.

    Example:
        >>> stream = BatchStream(task, cfg)
        >>> torch.equal(stream(5), batch_for_step(task, cfg, 5))
        True
    """

    def __init__(self, task: BBTask, cfg: TrainConfig) -> None:
        self.task, self.cfg, self.n = task, cfg, steps_per_draw(cfg)
        self.block, self.tokens = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        if step // self.n != self.block:
            self.block = step // self.n
            self.tokens = _draw(self.task, self.cfg, self.block)
        i, b = step % self.n, self.cfg.batch_size
        return self.tokens[i * b : (i + 1) * b]


def probe_batch(task: BBTask, cfg: TrainConfig) -> torch.Tensor:
    """The fixed held-out batch ``[probe_batch, seq_len]`` that every probe uses."""
    return task.sample(cfg.probe_batch, cfg.seq_len, seed=_stream_seed(cfg.seed, 2, 0))


def build_model(cfg: TrainConfig, vocab_size: int) -> ToyTransformer:
    """A freshly initialised model; its weights depend only on ``cfg.seed``."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(_stream_seed(cfg.seed, 0, 0))
        return ToyTransformer(cfg.model_config(vocab_size))


def step_loss(logits: torch.Tensor, tokens: torch.Tensor, *, bos_loss: bool = True) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits`` ``[B, T-1, V]`` (from ``tokens[:, :-1]``)
    against ``tokens`` ``[B, T]``; without ``bos_loss`` the BOS position's prediction is left out.
    """
    start = 0 if bos_loss else 1
    return torch.nn.functional.cross_entropy(
        logits[:, start:].reshape(-1, logits.shape[-1]), tokens[:, 1 + start :].reshape(-1)
    )


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.learning_rate,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    raise TrainConfigError(f"Unknown optimizer {cfg.optimizer!r}; choose one of {OPTIMIZERS}.")


def train(
    cfg: TrainConfig,
    *,
    task: BBTask | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[dict[str, float]], None] | None = None,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train from scratch, or resume the run in ``out_dir``, up to ``cfg.steps`` steps.

    Args:
        cfg: the run's settings.
        task: the BB task; default :meth:`BBTask.from_prose`. A resumed run uses the task
            saved in ``out_dir`` and refuses a different one.
        out_dir: run folder for checkpoints, probes and snapshots; None keeps it in memory.
        resume: continue from ``out_dir``'s checkpoint when there is one. False starts over,
            removing only the files an earlier run wrote there (its manifest lists them).
        progress: show a tqdm bar with the live loss.
        callback: called with each new probe row (for live plots).
        device: where the model trains; batches are generated on the CPU and moved there.
        max_seconds: stop early once the run's wall time passes this; the last step is
            probed and checkpointed, and ``result.probes`` ends there.
        overwrite: write the run into a non-empty folder that training did not write. Files
            with the run's names are replaced; nothing else there is removed.

    Raises:
        ResumeError: ``out_dir`` holds a run with other settings (``steps`` may differ).
        CorruptCheckpointError: a checkpoint file is truncated or unreadable.
        RunFolderError: ``out_dir`` holds other files and ``overwrite`` is False.
    """
    out = Path(out_dir) if out_dir is not None else None
    device = torch.device(device)
    state = _load_checkpoint(out, cfg, task, device) if (out is not None and resume) else None
    if state is not None:
        task, model, opt, start, rows, snaps = state
        log.info("Resuming %s at step %d", out, start)
        _write_config(out, cfg, task)  # record the new steps / probe and checkpoint cadence
    else:
        task = task if task is not None else cfg.make_task()
        if out is not None:  # checked before any training, so a refusal costs nothing
            _start_run_dir(out, cfg, task, overwrite=overwrite)
        model = build_model(cfg, task.vocab_size).to(device)
        opt = build_optimizer(cfg, model)
        start, rows, snaps = 0, [], {}

    probe_tokens = probe_batch(task, cfg).to(device)
    batches = BatchStream(task, cfg)
    t0 = time.perf_counter() - (rows[-1]["wall_s"] if rows else 0.0)
    loss_val = float("nan")
    # Updated by hand: a for loop over tqdm counts a step only once it moves past it, so a
    # break on the last step would close the bar at total - 1 (drawn red, as a failure).
    bar = tqdm(initial=start, total=cfg.steps + 1, disable=not progress)
    for step in range(start, cfg.steps + 1):
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        last = step == cfg.steps or out_of_time
        already = bool(rows) and rows[-1]["step"] == step  # probed before the checkpoint
        # Probe before the update, so step 0 is the untrained model.
        if (step % cfg.probe_every == 0 or last) and not already:
            model.eval()
            cap = capture(model, probe_tokens)
            row = {"step": step, "loss": loss_val, "wall_s": time.perf_counter() - t0}
            row.update(probes_from_capture(cap, task, probe_tokens.cpu(), style=cfg.probe_style))
            rows.append(row)
            # Causal patterns: cropping the full pattern equals running the short prefix.
            s = cfg.snapshot_len
            snaps[step] = (
                torch.stack([cap.probs[i][0, :s, :s].float() for i in sorted(cap.probs)])
                if cap.probs
                else torch.zeros(0, s, s)
            )
            if callback is not None:
                callback(row)
        # Step 0 is saved too, so that even a run stopped at once leaves a resumable folder.
        fresh = step > start or start == 0
        if out is not None and fresh and (step % cfg.checkpoint_every == 0 or last):
            _save_checkpoint(out, model, opt, step, rows, snaps)
        if last:
            bar.update(1)
            if out_of_time:
                bar.total = bar.n  # stopped on purpose at max_seconds, not a failure
                log.info("Stopped at step %d of %d: max_seconds reached", step, cfg.steps)
            break
        model.train()
        tokens = batches(step).to(device)  # [B, T]
        loss = step_loss(model(tokens[:, :-1]), tokens, bos_loss=cfg.bos_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        opt.step()
        loss_val = loss.item()
        if not math.isfinite(loss_val):
            raise FloatingPointError(
                f"Loss became {loss_val} at step {step}; lower lr (now {cfg.learning_rate})."
            )
        bar.set_postfix(loss=f"{loss_val:.4f}", refresh=False)
        bar.update(1)
    bar.close()
    model.eval()
    return TrainResult(
        model=model,
        task=task,
        config=cfg,
        probes=pd.DataFrame(rows),
        snapshots=snaps,
        probe_tokens=probe_tokens[0, : cfg.snapshot_len].cpu().clone(),
        out_dir=out,
    )


# -- run folder ----------------------------------------------------------------------

MANIFEST = ".workbench-run.json"
# Every name training writes in a run folder; only these are ever removed.
RUN_NAMES = (
    MANIFEST,
    "config.json",
    "task.json",
    "task.safetensors",
    "probes.csv",
    "snapshots.safetensors",
    "checkpoint",
    "checkpoint.old",  # written by earlier versions
    "checkpoint.tmp",
)


def _is_ours(entry: Path) -> bool:
    """A name training writes, or a temporary sibling of one (``.name.*.part``/``.old``)."""
    name = entry.name
    return name in RUN_NAMES or any(
        name.startswith(f".{n}.") and name.endswith((".part", ".old")) for n in RUN_NAMES
    )


def _legacy_run(out: Path) -> bool:
    """A folder written before manifests: only run names, and a config.json of ours."""
    try:
        meta = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "train" in meta and all(_is_ours(e) for e in out.iterdir())


def _start_run_dir(out: Path, cfg: TrainConfig, task: BBTask, *, overwrite: bool = False) -> None:
    """Make ``out`` ready for a fresh run, removing only what a run wrote there before."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"out_dir {out} is a file, expected a folder; pass another out_dir.")
    if out.is_dir():
        entries = sorted(out.iterdir())
        ours = (out / MANIFEST).is_file() or _legacy_run(out)
        if entries and not ours and not overwrite:
            shown = ", ".join(e.name for e in entries[:8]) + (" ..." if len(entries) > 8 else "")
            raise RunFolderError(
                f"out_dir {out} is not empty and was not written by training (no {MANIFEST}); "
                f"it holds: {shown}. Expected a new or empty folder, or a run folder. Pass "
                "another out_dir, or overwrite=True to write the run beside these files (only "
                f"the run's own names {list(RUN_NAMES[1:7])} would be replaced)."
            )
        for e in filter(_is_ours, entries):
            if e.is_dir() and not e.is_symlink():
                shutil.rmtree(e)
            else:
                e.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, json.dumps({"written_by": __name__, "names": RUN_NAMES}))
    _write_config(out, cfg, task)
    atomic_write_text(out / "task.json", json.dumps({"chars": task.chars}))
    tensors = {"bigram": task.bigram, "unigram": task.unigram, "triggers": task.triggers}
    atomic_write(out / "task.safetensors", lambda f: f.write(save(tensors)))


def _write_config(out: Path, cfg: TrainConfig, task: BBTask) -> None:
    meta = {"train": cfg.to_dict(), "model": cfg.model_config(task.vocab_size).to_dict()}
    atomic_write_text(out / "config.json", json.dumps(meta, indent=2))


def _save_checkpoint(
    out: Path,
    model: ToyTransformer,
    opt: torch.optim.Optimizer,
    step: int,
    rows: list[dict[str, float]],
    snaps: dict[int, torch.Tensor],
) -> None:
    """Write the checkpoint to a fresh folder, then swap it in: a crash leaves the old one."""
    if not (out / MANIFEST).is_file():  # a run resumed from a folder of an earlier version
        atomic_write_text(out / MANIFEST, json.dumps({"written_by": __name__, "names": RUN_NAMES}))
    probes_csv = pd.DataFrame(rows).to_csv(index=False)
    snap_bytes = save({f"step_{s}": v.contiguous() for s, v in snaps.items()})
    with atomic_dir(out / "checkpoint") as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        torch.save(opt.state_dict(), tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}))
        (tmp / "probes.csv").write_text(probes_csv)
        (tmp / "snapshots.safetensors").write_bytes(snap_bytes)
    # Top-level copies for readers that only want the curves.
    atomic_write_text(out / "probes.csv", probes_csv)
    atomic_write(out / "snapshots.safetensors", lambda f: f.write(snap_bytes))


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, turning a missing, truncated or unreadable file into a named error."""
    try:
        return read(path)
    except Exception as exc:  # safetensors, pickle, zip and JSON each raise their own kind
        run = path.parent.parent if path.parent.name == "checkpoint" else path.parent
        raise CorruptCheckpointError(
            f"Cannot read {path} ({type(exc).__name__}: {exc}); the file is truncated or "
            "damaged. To recover: train again with resume=False (it removes only the run's "
            f"files), or delete {run} and retrain."
        ) from exc


def _read_task(out: Path) -> BBTask:
    chars = _read(out / "task.json", lambda p: json.loads(p.read_text()))["chars"]
    t = _read(out / "task.safetensors", lambda p: load_file(str(p)))
    return BBTask(chars=chars, bigram=t["bigram"], unigram=t["unigram"], triggers=t["triggers"])


def _find_checkpoint(out: Path) -> Path | None:
    """The checkpoint folder, or the one a crash left aside while swapping it in."""
    if (out / "checkpoint").is_dir():
        return out / "checkpoint"
    aside = sorted(out.glob(".checkpoint.*.old/x")) + [out / "checkpoint.old"]
    return next((p for p in aside if p.is_dir()), None)


def _load_checkpoint(
    out: Path, cfg: TrainConfig, task: BBTask | None, device: torch.device
) -> tuple | None:
    ckpt = _find_checkpoint(out)
    if ckpt is None:
        return None
    meta = _read(out / "config.json", lambda p: json.loads(p.read_text()))
    saved = TrainConfig.from_dict(meta["train"])
    # How long to train and how often to probe or checkpoint may change on resume.
    free = {"steps", "probe_every", "checkpoint_every"}
    diff = {
        k: (v, getattr(cfg, k))
        for k, v in asdict(saved).items()
        if k not in free and v != getattr(cfg, k)
    }
    if diff:
        raise ResumeError(
            f"{out} holds a run with other settings {{name: (saved, asked)}}: {diff}. "
            "Use another out_dir, or resume=False to start over."
        )
    saved_task = _read_task(out)
    if task is not None and not (
        task.chars == saved_task.chars and torch.equal(task.bigram, saved_task.bigram)
    ):
        raise ResumeError(f"{out} was trained on a different BB task; pass task=None to reuse it.")
    step = _read(ckpt / "state.json", lambda p: json.loads(p.read_text()))["step"]
    if step > cfg.steps:
        raise ResumeError(f"{out} is already at step {step}, beyond steps={cfg.steps}.")
    model = build_model(cfg, saved_task.vocab_size)
    model.load_state_dict(_read(ckpt / "model.safetensors", lambda p: load_file(str(p))))
    model.to(device)
    opt = build_optimizer(cfg, model)  # after the move: its state follows the parameters
    opt.load_state_dict(_read(ckpt / "optim.pt", lambda p: torch.load(p, weights_only=True)))
    rows = _read(ckpt / "probes.csv", pd.read_csv).to_dict("records")
    snaps = {
        int(k.split("_")[1]): v
        for k, v in _read(ckpt / "snapshots.safetensors", lambda p: load_file(str(p))).items()
    }
    return saved_task, model, opt, step, rows, snaps


def load_run(out_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> TrainResult:
    """A finished run from its folder (model at its last checkpoint), for analysis."""
    out = Path(out_dir)
    if not (out / "config.json").is_file():
        raise ResumeError(f"{out} is not a run folder (no config.json).")
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["train"])
    state = _load_checkpoint(out, cfg, None, torch.device(device))
    if state is None:
        raise ResumeError(f"{out} has no checkpoint yet.")
    task, model, _, step, rows, snaps = state
    model.eval()
    probe_tokens = probe_batch(task, cfg)[0, : cfg.snapshot_len].clone()
    return TrainResult(model, task, cfg, pd.DataFrame(rows), snaps, probe_tokens, out)


def train_variants(
    base: TrainConfig,
    variants: dict[str, dict[str, Any]],
    *,
    task: BBTask | None = None,
    out_root: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, TrainResult]:
    """Train ``base`` changed by each variant's fields, e.g. Adam / SGD / ReLU attention.

    Each run gets its own folder ``out_root/<name>`` (resumed when it exists).

    Example:
        >>> runs = train_variants(cfg, {"Adam": {}, "SGD": {"optimizer": "sgd"}})
    """
    out: dict[str, TrainResult] = {}
    tasks: dict[bool, BBTask] = {}  # built once per vocabulary when not given
    for name, changes in variants.items():
        cfg = replace(base, **changes)
        if task is None and cfg.case_sensitive not in tasks:
            tasks[cfg.case_sensitive] = cfg.make_task()
        run_task = task if task is not None else tasks[cfg.case_sensitive]
        folder = None if out_root is None else Path(out_root) / _slug(name)
        out[name] = train(cfg, task=run_task, out_dir=folder, progress=progress, device=device)
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "run"
