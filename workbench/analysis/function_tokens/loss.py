"""Next-token loss split by (current token F/C → next token F/C).

Each prediction of token t+1 from the prefix ending at token t is classed by whether
token t and token t+1 are function (F) or content (C) tokens; the table gives the mean
cross-entropy per class. The paper finds F→C the hardest (about 4.88 nats for its 1.5B
model). Left out:

- the prediction made *at* the sink (window position 0), like the sink everywhere else;
- predictions across a document boundary: predicting the end-of-text separator that
  packing puts between documents, and predicting the next document's first token from
  it. Neither is a prediction inside a text (the separator is not counted as a function
  token, so they would otherwise land in the content classes); their number is
  ``n_boundary``.

The model runs once: :func:`per_token_losses` keeps every prediction's loss, its two
token ids and its document, and :meth:`TokenLosses.decompose` classes them for any
function-token set at no model cost. Per-document sums give each class mean a document
bootstrap interval.

Example:
    >>> tl = per_token_losses(model, docs, max_tokens=20_000)     # the one model run
    >>> dec = tl.decompose(ft.ids)
    >>> dec.table            # rows: current F/C, columns: next F/C, values: mean loss
    >>> dec.intervals        # class, mean_loss, low, high, n, docs
    >>> tl.decompose(other_ids).table                            # another set, no model run
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.analysis.function_tokens.windows import packed_windows
from workbench.analysis.uncertainty import Bootstrap
from workbench.documents import as_documents
from workbench.models.model import WorkbenchModel
from workbench.sae.activations import residuals
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = [
    "CLASSES",
    "LossAccumulator",
    "LossDecomposition",
    "TokenLosses",
    "loss_decomposition",
    "loss_over_checkpoints",
    "per_token_losses",
    "token_losses",
    "transition_classes",
]

# index = 2 * (current is content) + (next is content)
CLASSES = ("F→F", "F→C", "C→F", "C→C")


def transition_classes(ids: torch.Tensor, function_mask: torch.Tensor) -> torch.Tensor:
    """Class of each prediction: ``ids`` [b, s] -> [b, s - 1] long in 0..3 (see CLASSES).

    Entry t classes the prediction of ``ids[:, t + 1]`` made at ``ids[:, t]``.

    Example:
        >>> mask = torch.tensor([True, False, False])   # token 0 is a function token
        >>> transition_classes(torch.tensor([[0, 1, 2, 0]]), mask).tolist()
        [[1, 3, 2]]
    """
    content = ~function_mask.to(ids.device)[ids]  # [b, s] bool
    return 2 * content[:, :-1].long() + content[:, 1:].long()


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next token: logits [b, s, V], ids [b, s] -> [b, s - 1]."""
    lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)


@dataclass
class TokenLosses:
    """Every scored prediction of one model run over packed windows.

    Attributes:
        loss: ``[n]`` float32 cross-entropy of each prediction.
        current, next: ``[n]`` long token ids (the token predicted from, the one predicted).
        doc: ``[n]`` long document number of the prediction.
        boundary: ``[n]`` bool, the prediction crosses a document boundary (left out of
            every class).
        n_docs: documents read.
    """

    loss: torch.Tensor
    current: torch.Tensor
    next: torch.Tensor
    doc: torch.Tensor
    boundary: torch.Tensor
    n_docs: int
    provenance: Provenance | None = field(default=None, repr=False)

    def decompose(
        self, function_ids: Sequence[int] | torch.Tensor, *, bootstrap: Bootstrap | None = None
    ) -> LossDecomposition:
        """The 2x2 mean-loss table for ``function_ids``, with document-bootstrap intervals.

        Example:
            >>> tl.decompose(ft.ids).intervals
        """
        ids = torch.as_tensor(function_ids, dtype=torch.long)
        vocab = int(max(self.current.max(), self.next.max(), ids.max() if ids.numel() else 0)) + 1
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[ids] = True
        keep = ~self.boundary
        cls = 2 * (~mask[self.current]).long() + (~mask[self.next]).long()
        cls, loss, doc = cls[keep], self.loss[keep].double(), self.doc[keep]
        if cls.numel() == 0:
            raise FunctionTokenError(
                "No prediction was scored inside a document: the texts are too short. Give "
                "longer texts or a larger max_tokens."
            )
        n = self.n_docs
        sums = torch.zeros(n, 4, dtype=torch.float64).index_put_((doc, cls), loss, accumulate=True)
        counts = torch.zeros(n, 4, dtype=torch.float64).index_put_(
            (doc, cls), torch.ones_like(loss), accumulate=True
        )
        used = counts.sum(1) > 0
        sums, counts = sums[used].numpy(), counts[used].numpy()
        return _decomposition(sums, counts, int(self.boundary.sum()), bootstrap, self.provenance)


def _decomposition(
    sums: np.ndarray,
    counts: np.ndarray,
    n_boundary: int,
    bootstrap: Bootstrap | None,
    provenance: Provenance | None,
) -> LossDecomposition:
    """A :class:`LossDecomposition` from per-document class sums and counts ``[docs, 4]``."""
    boot = bootstrap or Bootstrap()
    tot_s, tot_c = sums.sum(0), counts.sum(0)
    if tot_c.sum() == 0:
        raise FunctionTokenError("No prediction was scored: the texts are too short.")
    est, draws, iv = boot.ratio(sums, counts, m=3)
    frame = lambda v: pd.DataFrame(  # noqa: E731
        np.asarray(v).reshape(2, 2), index=["F", "C"], columns=["F", "C"]
    ).rename_axis(index="current", columns="next")
    table = frame(np.where(tot_c > 0, est, np.nan))
    n_docs = (counts > 0).sum(0)
    intervals = pd.DataFrame(
        {
            "class": list(CLASSES),
            "mean_loss": np.where(tot_c > 0, est, np.nan),
            "low": iv["low"],
            "high": iv["high"],
            "n": tot_c.astype(int),
            "docs": n_docs.astype(int),
        }
    )
    overall = float(tot_s.sum() / tot_c.sum())
    return LossDecomposition(
        table,
        frame(tot_c.astype(int)),
        overall,
        provenance,
        intervals=intervals,
        n_boundary=n_boundary,
        n_docs=int(sums.shape[0]),
        draws=draws,
        alpha=boot.alpha,
    )


class LossAccumulator:
    """Running sums and counts of loss per class and per document."""

    def __init__(self) -> None:
        self.sums = torch.zeros(0, 4, dtype=torch.float64)
        self.counts = torch.zeros(0, 4, dtype=torch.float64)

    def update(
        self,
        losses: torch.Tensor,
        classes: torch.Tensor,
        keep: torch.Tensor | None = None,
        docs: torch.Tensor | None = None,
    ) -> None:
        """Add ``losses`` and ``classes`` [b, s - 1]; ``keep`` [b, s - 1] bool selects
        entries; ``docs`` [b, s - 1] numbers their documents (default: one per row)."""
        loss, cls = losses.detach().double().cpu(), classes.cpu()
        if docs is None:
            docs = torch.arange(loss.shape[0])[:, None].expand_as(cls) + self.sums.shape[0]
        docs = docs.cpu()
        if keep is not None:
            loss, cls, docs = loss[keep.cpu()], cls[keep.cpu()], docs[keep.cpu()]
        loss, cls, docs = loss.reshape(-1), cls.reshape(-1), docs.reshape(-1).long()
        n = int(docs.max()) + 1 if docs.numel() else 0
        if n > self.sums.shape[0]:
            grow = n - self.sums.shape[0]
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, 4)])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow, 4)])
        self.sums.index_put_((docs, cls), loss, accumulate=True)
        self.counts.index_put_((docs, cls), torch.ones_like(loss), accumulate=True)

    def result(
        self, provenance: Provenance | None = None, bootstrap: Bootstrap | None = None
    ) -> LossDecomposition:
        if int(self.counts.sum()) == 0:
            raise FunctionTokenError("No prediction was scored: the texts are too short.")
        used = self.counts.sum(1) > 0
        return _decomposition(
            self.sums[used].numpy(), self.counts[used].numpy(), 0, bootstrap, provenance
        )


@dataclass
class LossDecomposition:
    """Mean loss per (current, next) class, the number of predictions, and the overall mean.

    ``intervals`` gives each class its 95% document-bootstrap interval; ``n_boundary``
    counts the predictions across a document boundary that were left out.
    """

    table: pd.DataFrame  # 2x2, index current F/C, columns next F/C
    counts: pd.DataFrame  # 2x2 prediction counts
    overall: float
    provenance: Provenance | None = field(default=None, repr=False)
    intervals: pd.DataFrame | None = None  # class, mean_loss, low, high, n, docs
    n_boundary: int = 0
    n_docs: int = 0
    draws: np.ndarray | None = field(default=None, repr=False)  # [n_boot, 4]
    alpha: float = 0.05

    def long(self) -> pd.DataFrame:
        """One row per class: class, mean_loss, n (and low, high where intervals exist)."""
        rows = []
        for cur in "FC":
            for nxt in "FC":
                rows.append(
                    {
                        "class": f"{cur}→{nxt}",
                        "mean_loss": float(self.table.loc[cur, nxt]),
                        "n": int(self.counts.loc[cur, nxt]),
                    }
                )
        out = pd.DataFrame(rows)
        if self.intervals is not None:
            out = out.merge(self.intervals[["class", "low", "high"]], on="class")
        return out

    def hardest(self) -> str:
        """Which class is hardest, and whether the intervals support it, in one sentence.

        The hardest class's loss minus each other class's, over the same document
        resamples; the claim holds when all three Bonferroni-corrected lower bounds
        (``m = 3``) are above zero.
        """
        means = self.table.to_numpy().reshape(-1)
        top = int(np.nanargmax(means))
        name = CLASSES[top]
        if self.draws is None or self.n_docs < 2:
            return (
                f"{name} has the highest mean loss ({means[top]:.2f} nats), but with "
                f"{self.n_docs} document(s) there is no interval to support it."
            )
        z = Bootstrap(alpha=self.alpha).z(3)
        worst = []
        for c in range(4):
            if c == top or np.isnan(means[c]):
                continue
            diff = self.draws[:, top] - self.draws[:, c]
            lo = (means[top] - means[c]) - z * float(np.nanstd(diff, ddof=1))
            worst.append((lo, CLASSES[c]))
        lo, other = min(worst)
        if lo > 0:
            return (
                f"{name} is the hardest class ({means[top]:.2f} nats): its loss exceeds every "
                f"other class's over document resamples (smallest corrected margin, over "
                f"{other}: > {lo:.2f} nats; {self.n_docs} documents)."
            )
        return (
            f"{name} has the highest mean loss ({means[top]:.2f} nats), but the intervals "
            f"do not separate it from {other} (corrected margin down to {lo:+.2f} nats over "
            f"{self.n_docs} documents): the sample is too small to call it the hardest."
        )


def per_token_losses(
    model: WorkbenchModel,
    texts: Iterable[str],
    *,
    max_tokens: int = 20_000,
    length: int = 128,
    batch_size: int = 8,
    max_doc_tokens: int | None = None,
    progress: bool = True,
) -> TokenLosses:
    """Run ``model`` once over packed windows of ``texts`` and keep every prediction's loss.

    The sink's own prediction (window position 0) is dropped; predictions across a
    document boundary are kept but marked (``boundary``). ``max_doc_tokens`` reads only
    the first tokens of each document (see :func:`packed_windows`).
    """
    texts = as_documents(texts, "per_token_losses")
    pw = packed_windows(
        model, texts, length=length, max_tokens=max_tokens, max_doc_tokens=max_doc_tokens
    )
    cross = pw.crosses_boundary()[:, 1:]  # drop the prediction made at the sink
    parts: dict[str, list[torch.Tensor]] = {"loss": [], "current": [], "next": [], "doc": []}
    total = pw.ids.shape[0] * (length - 1)
    bar = tqdm(total=total, desc="per-token losses", unit="tok", disable=not progress)
    try:
        for batch, doc in pw.batches(batch_size):
            logits = residuals(model, batch, [], logits=True)["logits"]
            ids = batch.to(logits.device)
            parts["loss"].append(token_losses(logits, ids)[:, 1:].float().cpu().reshape(-1))
            parts["current"].append(batch[:, 1:-1].reshape(-1))
            parts["next"].append(batch[:, 2:].reshape(-1))
            parts["doc"].append(doc[:, 1:-1].reshape(-1))
            bar.update(batch.shape[0] * (batch.shape[1] - 1))
    finally:
        bar.close()
    prov = provenance_for(
        model,
        None,
        None,
        analysis="per_token_losses",
        max_tokens=max_tokens,
        length=length,
        n_docs=pw.n_docs,
    )
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return TokenLosses(
        cat["loss"],
        cat["current"],
        cat["next"],
        cat["doc"].clamp(min=0),
        cross.reshape(-1),
        pw.n_docs,
        prov,
    )


def loss_decomposition(
    model: WorkbenchModel,
    texts: Iterable[str],
    function_ids: Sequence[int] | torch.Tensor,
    *,
    max_tokens: int = 20_000,
    length: int = 128,
    batch_size: int = 8,
    max_doc_tokens: int | None = None,
    bootstrap: Bootstrap | None = None,
    progress: bool = True,
) -> LossDecomposition:
    """The 2x2 mean-loss table of ``model`` over packed windows of ``texts``.

    One model run; for several function-token sets call :func:`per_token_losses` once
    and :meth:`TokenLosses.decompose` per set.
    """
    tl = per_token_losses(
        model,
        texts,
        max_tokens=max_tokens,
        length=length,
        batch_size=batch_size,
        max_doc_tokens=max_doc_tokens,
        progress=progress,
    )
    return tl.decompose(function_ids, bootstrap=bootstrap)


def loss_over_checkpoints(
    load: Callable[[str], WorkbenchModel],
    revisions: Sequence[str],
    texts: Sequence[str],
    function_ids: Sequence[int] | torch.Tensor,
    *,
    max_tokens: int = 5_000,
    length: int = 128,
) -> pd.DataFrame:
    """The four class losses per checkpoint: ``load(revision)`` gives each model.

    For Pythia: ``load = lambda r: wb.load_model("EleutherAI/pythia-160m", revision=r)``
    with revisions like ``"step1000"``. Columns: revision, class, mean_loss, n.
    """
    frames = []
    for rev in revisions:
        dec = loss_decomposition(
            load(rev), texts, function_ids, max_tokens=max_tokens, length=length, progress=False
        )
        frames.append(dec.long().assign(revision=rev))
    return pd.concat(frames, ignore_index=True)[["revision", "class", "mean_loss", "n"]]
