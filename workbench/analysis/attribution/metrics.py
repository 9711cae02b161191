"""Metrics of a run's logits that attribution explains: a logit difference, a log-probability,
or any callable.

A metric maps logits ``[rows, seq, vocab]`` to one number per row (``[rows]``), read at
``position`` of each row (``-1``: the last token). Rows are the copies of a batched run,
so the exact-patching sweep scores every variant in one pass.

Example:
    >>> m = LogitDiff(good=" Mary", bad=" John", tokenizer=model.tokenizer)
    >>> m(logits)           # [rows]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import WorkbenchError

__all__ = ["AttributionError", "CallableMetric", "LogProb", "LogitDiff", "Metric", "as_metric"]


class AttributionError(WorkbenchError, ValueError):
    """Attribution asked for something it cannot compute as stated."""


def _token_id(token: int | str, tokenizer: Any) -> int:
    if isinstance(token, bool):
        raise AttributionError(f"A token must be an id or a string, got {token!r}.")
    if isinstance(token, int):
        return token
    if tokenizer is None:
        raise AttributionError(f"Token {token!r} is a string: pass tokenizer= to look it up.")
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise AttributionError(
            f"{token!r} is {len(ids)} tokens ({ids}) under this tokenizer; a metric reads one "
            "token. Give a single-token string (often with a leading space) or its id."
        )
    return int(ids[0])


class Metric:
    """Base class: ``metric(logits [rows, seq, vocab]) -> [rows]`` float32."""

    position: int = -1
    name: str = "metric"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _at(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.position].float()  # [rows, vocab]

    def from_final(self, model: Any, final: torch.Tensor) -> torch.Tensor:
        """The metric from the last layer's output ``[rows, seq, d_model]``: the model's
        head (final norm, unembedding, soft-cap) runs at ``position`` only, which is what
        makes attribution patching's backward pass cheap."""
        return self(model.logits_of(final[:, [self.position]]), at=0)


@dataclass
class LogitDiff(Metric):
    """``logit[good] - logit[bad]`` at ``position``."""

    good: int | str
    bad: int | str
    position: int = -1
    tokenizer: Any = None

    def __post_init__(self) -> None:
        self.good_id = _token_id(self.good, self.tokenizer)
        self.bad_id = _token_id(self.bad, self.tokenizer)
        self.name = f"logit({self.good!r}) - logit({self.bad!r})"

    def __call__(self, logits: torch.Tensor, at: int | None = None) -> torch.Tensor:
        x = self._at(logits) if at is None else logits[:, at].float()
        return x[:, self.good_id] - x[:, self.bad_id]

    def direction(self, unembed: torch.Tensor) -> torch.Tensor:
        """``W_U[good] - W_U[bad]`` from an unembedding weight ``[vocab, d_model]``."""
        return unembed[self.good_id].float() - unembed[self.bad_id].float()


@dataclass
class LogProb(Metric):
    """``log p(token)`` at ``position``."""

    token: int | str
    position: int = -1
    tokenizer: Any = None

    def __post_init__(self) -> None:
        self.token_id = _token_id(self.token, self.tokenizer)
        self.name = f"log p({self.token!r})"

    def __call__(self, logits: torch.Tensor, at: int | None = None) -> torch.Tensor:
        x = self._at(logits) if at is None else logits[:, at].float()
        return torch.log_softmax(x, -1)[:, self.token_id]


@dataclass
class CallableMetric(Metric):
    """Any ``fn(logits [rows, seq, vocab]) -> [rows]``."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str = "metric"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        out = self.fn(logits)
        if not isinstance(out, torch.Tensor) or out.shape != (logits.shape[0],):
            raise AttributionError(
                f"A metric must return one value per row, shape [{logits.shape[0]}]; got "
                f"{getattr(out, 'shape', type(out).__name__)}."
            )
        return out.float()

    def from_final(self, model: Any, final: torch.Tensor) -> torch.Tensor:
        """Any position may matter to a callable: the head runs at every position."""
        return self(model.logits_of(final))


def as_metric(metric: Metric | Callable[[torch.Tensor], torch.Tensor]) -> Metric:
    """``metric`` as a :class:`Metric` (a plain callable is wrapped)."""
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return CallableMetric(metric, getattr(metric, "__name__", "metric"))
    raise AttributionError(
        f"metric must be LogitDiff, LogProb or a callable on logits; got {type(metric).__name__}."
    )
