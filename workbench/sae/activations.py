"""Residual-stream activations from nnsight traces: packed token windows, early-stopped traces.

Documents are tokenized, joined with the end-of-text token and cut into windows of
``length`` tokens (sequence packing: no padding anywhere). Position 0 of every window is
the attention sink (or the BOS token, for tokenizers that add one); it carries massive
activations unlike any other position, so SAEs are trained without it and the
bipartite graph leaves it out.

A trace reads the layers it needs and stops after the deepest one, so reading layer 6
costs 7 layers of compute, not the whole model and its unembedding.

Example:
    >>> windows = token_windows(model, docs, length=128, max_tokens=20_000)
    >>> acts = residuals(model, windows[:8], layers=[6, 14])     # {6: [8, 128, 576], ...}
    >>> store = harvest(model, docs, layers=[6, 14], n_tokens=20_000)
    >>> store.acts[6].shape                                       # [n, 576], sink left out
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.models.model import WorkbenchModel
from workbench.storage import atomic_write, cache_root, content_key
from workbench.tracing.capture import capture

__all__ = [
    "SITES",
    "ActivationStore",
    "ActivationError",
    "harvest",
    "iter_batches",
    "iter_packed",
    "iter_windows",
    "residuals",
    "token_windows",
    "window_batches",
]

log = logging.getLogger(__name__)

SITES = ("resid_pre", "resid_post")


class ActivationError(WorkbenchError, ValueError):
    """Activations that cannot be read as asked (an unknown site, too little text)."""


def _window_key(model: WorkbenchModel, texts: Sequence[str], settings: dict[str, Any]) -> str:
    return content_key(model.model_id, model.weight_hash(), list(texts), settings, n=20)


def iter_windows(
    model: WorkbenchModel,
    texts: Iterable[str],
    *,
    length: int = 128,
    max_tokens: int | None = None,
) -> Iterator[list[int]]:
    """Pack ``texts`` into windows of ``length`` token ids, lazily (constant memory).

    Documents are joined with the end-of-text token. If the tokenizer adds BOS, every
    window starts with BOS and holds ``length - 1`` text tokens. ``max_tokens`` caps the
    number of *analysed* tokens (the positions after the first of each window).
    """
    for ids, _ in iter_packed(model, texts, length=length, max_tokens=max_tokens):
        yield ids


def iter_packed(
    model: WorkbenchModel,
    texts: Iterable[str],
    *,
    length: int = 128,
    max_tokens: int | None = None,
    max_doc_tokens: int | None = None,
) -> Iterator[tuple[list[int], list[int]]]:
    """Windows as :func:`iter_windows` packs them, each with the document of every position.

    Returns ``(ids, docs)`` per window: ``docs[t]`` is the index of the text that token
    ``t`` came from (the end-of-text separator belongs to the text it ends; a BOS that
    starts a window to none, ``-1``). ``max_doc_tokens`` keeps only the first tokens of
    each text.
    """
    if length < 2:
        raise ActivationError(f"Windows need 2 or more tokens (a sink and one more); got {length}.")
    tok = model.tokenizer
    bos = tok.bos_token_id if model.adapter.adds_bos else None
    sep = tok.eos_token_id
    body = length - (1 if bos is not None else 0)
    n_max = None if max_tokens is None else -(-max_tokens // (length - 1))
    head = [bos] if bos is not None else []
    n = 0
    buf: list[int] = []
    owner: list[int] = []
    for d, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False).input_ids
        if max_doc_tokens is not None:
            ids = ids[:max_doc_tokens]
        if sep is not None:
            ids = [*ids, sep]
        buf.extend(ids)
        owner.extend([d] * len(ids))
        while len(buf) >= body:
            chunk, buf = buf[:body], buf[body:]
            who, owner = owner[:body], owner[body:]
            yield head + chunk, [-1] * len(head) + who
            n += 1
            if n_max is not None and n >= n_max:
                return


def token_windows(
    model: WorkbenchModel,
    texts: Sequence[str],
    *,
    length: int = 128,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """All windows of :func:`iter_windows` as one ``[n, length]`` long tensor (CPU)."""
    windows = list(iter_windows(model, texts, length=length, max_tokens=max_tokens))
    if not windows:
        raise ActivationError(
            f"The texts hold fewer tokens than one window of {length}. Give more text or a "
            "smaller window length."
        )
    return torch.tensor(windows, dtype=torch.long)


def window_batches(
    model: WorkbenchModel,
    texts: Iterable[str],
    *,
    length: int = 128,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> Iterator[torch.Tensor]:
    """Batches ``[b, length]`` of packed windows, built lazily from ``texts``."""
    batch: list[list[int]] = []
    for w in iter_windows(model, texts, length=length, max_tokens=max_tokens):
        batch.append(w)
        if len(batch) == batch_size:
            yield torch.tensor(batch, dtype=torch.long)
            batch = []
    if batch:
        yield torch.tensor(batch, dtype=torch.long)


def iter_batches(windows: torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first window index, ``[b, length]`` batch) over ``windows``."""
    for start in range(0, windows.shape[0], batch_size):
        yield start, windows[start : start + batch_size]


def residuals(
    model: WorkbenchModel,
    ids: torch.Tensor,
    layers: Sequence[int],
    *,
    site: str = "resid_post",
    logits: bool = False,
) -> dict[Any, torch.Tensor]:
    """Residual stream ``{layer: [b, s, d_model]}`` of unpadded ids ``[b, s]``, in one trace.

    The trace stops after the deepest layer unless ``logits`` is asked for (then the
    result also holds ``"logits"`` [b, s, vocab]).
    """
    if site not in SITES:
        raise ActivationError(f"Unknown site {site!r}; residual sites: {SITES}.")
    wanted = model.check_layers(layers)
    what = ([site] if wanted else []) + (["logits"] if logits else [])
    if not what:
        raise ActivationError("residuals() was asked for no layer and no logits.")
    cap = capture(
        model,
        ids.to(model.device),
        what,
        layers=wanted or None,
        grad=False,
        provenance=False,
    )
    out: dict[Any, torch.Tensor] = {}
    if wanted:
        stacked = getattr(cap, site)
        out = {i: stacked[j] for j, i in enumerate(cap.layers)}
    if logits:
        out["logits"] = cap.logits
    return out


@dataclass
class ActivationStore:
    """Harvested activations: ``acts[layer]`` [n, d_model] and the token at each row.

    Rows are the non-sink positions of every window, in order (window-major).
    """

    acts: dict[int, torch.Tensor]
    token_ids: torch.Tensor  # [n] long
    site: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    def split(self, eval_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices (train, eval), shuffled with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(self.n_tokens, generator=g)
        n_eval = max(1, int(self.n_tokens * eval_fraction))
        return perm[n_eval:], perm[:n_eval]


def harvest(
    model: WorkbenchModel,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    n_tokens: int,
    length: int = 128,
    batch_size: int = 8,
    site: str = "resid_post",
    dtype: torch.dtype = torch.float16,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ActivationStore:
    """Stream ``n_tokens`` non-sink activations of ``layers`` out of nnsight traces.

    Everything is kept in ``dtype`` (half precision by default: 1.2 KB per token and layer
    for a 576-wide model). With ``cache``, the result is written atomically under
    ``cache_root()/activations`` keyed by the model's weights, the texts and the settings,
    and read back on the next call.
    """
    layers = model.check_layers(layers)
    settings = {
        "layers": layers,
        "n_tokens": n_tokens,
        "length": length,
        "site": site,
        "dtype": str(dtype),
    }
    path = None
    if cache:
        root = Path(cache_dir) if cache_dir is not None else cache_root() / "activations"
        path = root / f"{_window_key(model, texts, settings)}.safetensors"
        if path.is_file():
            saved = load_file(str(path))
            log.info("Read cached activations from %s.", path)
            return ActivationStore(
                {i: saved[f"L{i}"] for i in layers}, saved["token_ids"], site, settings
            )
    windows = token_windows(model, texts, length=length, max_tokens=n_tokens)
    n = windows.shape[0] * (length - 1)
    out = {i: torch.empty(n, model.d_model, dtype=dtype) for i in layers}
    token_ids = windows[:, 1:].reshape(-1)
    bar = tqdm(total=n, desc=f"activations L{layers}", unit="tok", disable=not progress)
    try:
        for start, batch in iter_batches(windows, batch_size):
            res = residuals(model, batch, layers, site=site)
            rows = slice(start * (length - 1), (start + batch.shape[0]) * (length - 1))
            for i in layers:
                out[i][rows] = res[i][:, 1:].reshape(-1, model.d_model).to("cpu", dtype)
            bar.update(batch.shape[0] * (length - 1))
    finally:
        bar.close()
    out = {i: a[:n_tokens] for i, a in out.items()}
    token_ids = token_ids[:n_tokens]
    if path is not None:
        tensors = {f"L{i}": a.contiguous() for i, a in out.items()}
        blob = save({**tensors, "token_ids": token_ids.contiguous()})
        atomic_write(path, lambda f: f.write(blob))
    return ActivationStore(out, token_ids, site, settings)
