"""Reduce captures over a whole data set, with a progress bar and a resumable cache.

A :class:`Reducer` folds each batch's :class:`Capture` into a running state that is
small and constant in the number of documents (sums, counts, maxima). After every batch
the state is written atomically to a cache file keyed by everything that decides the
result: the model's weights, the inputs, the settings, the reducer's code and its
options (public attributes that are not part of its state), and the code and captured
values of the transforms. Editing a reducer or a transform therefore starts afresh
instead of returning an old result. Each cache file carries a sha256 of its contents,
checked on load. An interrupted run started again with the same arguments resumes after
the last finished batch.

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

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.models.model import WorkbenchModel
from workbench.storage import cache_root, content_key, load_checked, save_checked
from workbench.tracing.capture import Capture, Transform, capture

__all__ = ["Reducer", "reducer_fingerprint", "stream", "stream_cache_key"]


class Reducer:
    """Fold captures into a small state. Subclass and implement all four methods.

    Public attributes that are not keys of ``state()`` count as options and go into the
    cache key (a threshold set in ``__init__``, say); attributes starting with ``_`` do
    not. ``state()`` must return tensors, numbers, strings, lists or dicts of those: it is
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


def _code(fn: Any) -> Any:
    """What decides a function's behaviour: its code, defaults and closed-over values."""
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class's code and its attributes
        return [_class_code(type(fn)), _values(vars(fn) if hasattr(fn, "__dict__") else {})]
    try:
        src: Any = inspect.getsource(fn)
    except (OSError, TypeError):
        src = [code.co_code.hex(), repr(code.co_consts), code.co_names]
    cells = [c.cell_contents for c in (fn.__closure__ or ()) if _filled(c)]
    return [src, _values(list(fn.__defaults__ or ())), _values(cells)]


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _class_code(cls: type) -> Any:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a notebook cell or by exec: hash the methods
        return [
            [name, _code(f)]
            for name, f in sorted(vars(cls).items())
            if callable(f) and hasattr(f, "__code__")
        ]


def _values(obj: Any) -> Any:
    """A JSON-able stand-in for ``obj``: tensors by content hash, functions by code."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": content_key(obj)}
    if isinstance(obj, dict):
        return {str(k): _values(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_values(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if callable(obj) and hasattr(obj, "__code__"):
        return {"fn": _code(obj)}
    return {"repr": repr(obj)}


def reducer_fingerprint(reducer: Reducer) -> dict[str, Any]:
    """The reducer's class, code and options (public attributes outside its state)."""
    state_keys = set(reducer.state())
    options = {
        k: v for k, v in vars(reducer).items() if not k.startswith("_") and k not in state_keys
    }
    cls = type(reducer)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "code": _class_code(cls),
        "options": _values(options),
    }


def stream_cache_key(model: WorkbenchModel, texts: Sequence[str], settings: dict[str, Any]) -> str:
    """sha256 over the model (id and weights), every text and ``settings`` (JSON-able)."""
    return content_key(model.model_id, model.weight_hash(), list(texts), _values(settings))


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
        "reducer": reducer_fingerprint(reducer),
        "transforms": {k: _code(fn) for k, fn in sorted((transforms or {}).items())},
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
        saved = load_checked(
            path,
            hint=f"Delete it (rm {path}) or pass use_cache=False; the run then starts afresh.",
        )
        reducer.load(saved["state"])
        done = int(saved["done"])
    bar = tqdm(total=len(batches), initial=done, desc="batches", disable=not progress)
    try:
        for bi in range(done, len(batches)):
            tokens = model.tokenize(batches[bi], max_length=max_length, truncate=True)
            reducer.update(capture(model, tokens, what, layers=layers, transforms=transforms))
            if use_cache:
                save_checked({"done": bi + 1, "state": reducer.state()}, path)
            bar.update(1)
    finally:
        bar.close()
    return reducer.result()
