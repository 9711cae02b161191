"""Reduce captures over a whole data set, with a progress bar and a resumable cache.

A :class:`Reducer` folds each batch's :class:`Capture` into a running state that is
small and constant in the number of documents (sums, counts, maxima). After every batch
the state is written atomically to a cache file keyed by the model's weights, the
inputs and the settings; an interrupted run started again with the same arguments
resumes after the last finished batch.

Example:
    >>> class MeanNorm(Reducer):
    ...     def __init__(self): self.total, self.count = torch.zeros(()), 0
    ...     def update(self, cap):
    ...         m = cap.tokens.attention_mask.bool()
    ...         self.total += cap.resid_post[-1][m].norm(dim=-1).sum(); self.count += int(m.sum())
    ...     def state(self): return {"total": self.total, "count": self.count}
    ...     def load(self, s): self.total, self.count = s["total"], s["count"]
    ...     def result(self): return float(self.total / self.count)
    >>> stream(model, docs, MeanNorm(), what=["resid_post"], layers=[-1])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.models.model import WorkbenchModel
from workbench.storage import cache_root
from workbench.tracing.capture import Capture, Transform, capture

__all__ = ["Reducer", "stream", "stream_cache_key"]


class Reducer:
    """Fold captures into a small state. Subclass and implement all four methods.

    ``state()`` must return tensors, numbers, strings, lists or dicts of those: it is
    saved with ``torch.save`` and read back with ``weights_only=True``.
    """

    def update(self, cap: Capture) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError


def stream_cache_key(model: WorkbenchModel, texts: Sequence[str], settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(model.model_id.encode())
    h.update(model.weight_hash().encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stream(
    model: WorkbenchModel,
    texts: Sequence[str],
    reducer: Reducer,
    *,
    what: Sequence[str],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int = 256,
    transforms: dict[str, Transform] | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> Any:
    """Run every text (truncated to ``max_length`` tokens) through ``model`` in batches.

    Returns ``reducer.result()``. ``settings`` are extra values that change the result
    (thresholds, the reducer's own options) and so belong in the cache key.
    """
    if not texts:
        from workbench.errors import WorkbenchError

        raise WorkbenchError("stream() got no texts: the data set is empty.")
    key_settings = {
        "reducer": type(reducer).__qualname__,
        "what": list(what),
        "layers": None if layers is None else list(layers),
        "batch_size": batch_size,
        "max_length": max_length,
        **(settings or {}),
    }
    key = stream_cache_key(model, texts, key_settings)
    path = Path(cache_dir) if cache_dir is not None else cache_root() / "stream"
    path = path / f"{key}.pt"
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    done = 0
    if use_cache and path.is_file():
        saved = torch.load(path, weights_only=True)
        reducer.load(saved["state"])
        done = int(saved["done"])
    bar = tqdm(total=len(batches), initial=done, desc="batches", disable=not progress)
    try:
        for bi in range(done, len(batches)):
            tokens = model.tokenize(batches[bi], max_length=max_length, truncate=True)
            reducer.update(capture(model, tokens, what, layers=layers, transforms=transforms))
            if use_cache:
                _atomic_save({"done": bi + 1, "state": reducer.state()}, path)
            bar.update(1)
    finally:
        bar.close()
    return reducer.result()
