"""A small LM trained from scratch on a local corpus, and its four class losses over training.

Offline there are no Pythia checkpoints, so this trains its own: a small Llama-style model
(HF ``LlamaForCausalLM``) on packed windows of the corpus, tokenized with the embedded
model's tokenizer and cut down to its ``vocab_size - 1`` most frequent tokens (the rest
map to one ``<unk>`` id, whose targets are not scored). The function tokens are the same
set as for the big model, so the F/C classes mean the same thing.

Checkpoints are written with ``save_pretrained`` (safetensors) at roughly geometric
steps, and at each one the held-out loss per class (F→F, F→C, C→F, C→C) is recorded.

Example:
    >>> run = train_tiny_lm(model.tokenizer, docs, ft.ids, TinyLMConfig(steps=600), "runs/lm")
    >>> run.losses.pivot(index="step", columns="class", values="mean_loss")
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.analysis.function_tokens.frequency import counts_from_ids
from workbench.analysis.function_tokens.loss import (
    LossAccumulator,
    token_losses,
    transition_classes,
)

__all__ = ["TinyLMConfig", "TinyLMRun", "checkpoint_steps", "train_tiny_lm"]

log = logging.getLogger(__name__)


@dataclass
class TinyLMConfig:
    """Model size and training settings (defaults: ~1.6M parameters, minutes on a CPU)."""

    vocab_size: int = 4096  # kept tokens + <unk>
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 512
    context: int = 64
    batch_size: int = 32
    steps: int = 1000
    lr: float = 3e-3
    n_checkpoints: int = 8
    eval_windows: int = 64
    time_limit_s: float | None = 15 * 60
    seed: int = 0


@dataclass
class TinyLMRun:
    """Where the checkpoints are, and the class losses at each."""

    out_dir: Path
    losses: pd.DataFrame  # step, class, mean_loss, n
    checkpoints: list[Path]
    seconds: float
    config: TinyLMConfig
    steps: int = 0  # steps actually trained: fewer than config.steps when time ran out


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """About ``n`` steps from 0 to ``steps``, spaced geometrically (early training moves fast)."""
    if steps <= 0:
        raise FunctionTokenError(f"steps must be positive; got {steps}.")
    pts = {0, steps}
    if n > 2:
        pts |= {round(math.exp(math.log(steps) * i / (n - 1))) for i in range(1, n - 1)}
    return sorted(p for p in pts if 0 <= p <= steps)


def _build_model(cfg: TinyLMConfig) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(conf)


def _windows(ids: list[int], context: int) -> torch.Tensor:
    n = len(ids) // context
    return torch.tensor(ids[: n * context], dtype=torch.long).view(n, context)


def _evaluate(lm: Any, windows: torch.Tensor, fmask: torch.Tensor, unk: int) -> LossAccumulator:
    acc = LossAccumulator()
    lm.eval()
    with torch.inference_mode():
        for s in range(0, windows.shape[0], 32):
            ids = windows[s : s + 32]
            losses = token_losses(lm(ids).logits, ids)[:, 1:]
            keep = ids[:, 2:] != unk  # <unk> targets are not scored
            acc.update(losses, transition_classes(ids, fmask)[:, 1:], keep)
    lm.train()
    return acc


def train_tiny_lm(
    tokenizer: Any,
    texts: Sequence[str],
    function_ids: Sequence[int] | torch.Tensor,
    cfg: TinyLMConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> TinyLMRun:
    """Train a small LM on ``texts`` and score the four class losses at each checkpoint.

    ``function_ids`` are ids of ``tokenizer``; every one must be among the kept tokens.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = tokenizer(list(texts), add_special_tokens=False).input_ids
    freq = counts_from_ids(docs, len(tokenizer))
    keep_ids = freq.order()[: cfg.vocab_size - 1]
    keep_ids = keep_ids[freq.counts[keep_ids] > 0]
    unk = int(keep_ids.numel())  # the <unk> id, after the kept tokens
    remap = torch.full((len(tokenizer),), unk, dtype=torch.long)
    remap[keep_ids] = torch.arange(unk)
    fids = torch.as_tensor(function_ids, dtype=torch.long)
    if bool((remap[fids] == unk).any()):
        raise FunctionTokenError(
            f"Some function tokens are not among the {cfg.vocab_size - 1} most frequent tokens "
            "of this corpus; raise vocab_size."
        )
    fmask = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    fmask[remap[fids]] = True
    stream = []
    for d in docs:
        stream.extend(remap[torch.tensor(d, dtype=torch.long)].tolist() if d else [])
    windows = _windows(stream, cfg.context)
    if windows.shape[0] < cfg.eval_windows + cfg.batch_size:
        raise FunctionTokenError(
            f"The corpus gives {windows.shape[0]} windows of {cfg.context} tokens; training "
            f"needs at least {cfg.eval_windows + cfg.batch_size}. Give more text."
        )
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(windows.shape[0], generator=g)
    eval_w, train_w = windows[perm[: cfg.eval_windows]], windows[perm[cfg.eval_windows :]]
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    save_file({"kept_token_ids": keep_ids.contiguous()}, str(out / "vocab.safetensors"))

    lm = _build_model(cfg)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        ),
    )
    marks = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    rows: list[dict[str, Any]] = []
    ckpts: list[Path] = []

    def checkpoint(step: int) -> None:
        from transformers.utils import logging as hf_logging

        path = out / f"step{step}"
        hf_logging.disable_progress_bar()  # one bar per checkpoint shard is noise here
        try:
            lm.save_pretrained(path, safe_serialization=True)
        finally:
            hf_logging.enable_progress_bar()
        ckpts.append(path)
        dec = _evaluate(lm, eval_w, fmask, unk).result()
        for r in dec.long().to_dict("records"):
            rows.append({"step": step, **r})
        rows.append({"step": step, "class": "all", "mean_loss": dec.overall, "n": None})

    bar = tqdm(total=cfg.steps, desc="tiny LM", disable=not progress)
    step = 0
    try:
        lm.train()
        for step in range(cfg.steps + 1):
            if step in marks:
                checkpoint(step)
            if step == cfg.steps:
                break
            if cfg.time_limit_s and time.perf_counter() - t0 > cfg.time_limit_s:
                log.warning("Tiny LM: time limit reached at step %d of %d.", step, cfg.steps)
                checkpoint(step)
                break
            idx = torch.randint(train_w.shape[0], (cfg.batch_size,), generator=g)
            ids = train_w[idx]
            loss = lm(ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
    finally:
        bar.close()
    losses = pd.DataFrame(rows)
    losses.to_csv(out / "losses.csv", index=False)
    return TinyLMRun(out, losses, ckpts, time.perf_counter() - t0, cfg, step)
