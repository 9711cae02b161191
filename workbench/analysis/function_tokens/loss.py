"""Next-token loss split by (current token F/C → next token F/C).

Each prediction of token t+1 from the prefix ending at token t is classed by whether
token t and token t+1 are function (F) or content (C) tokens; the table gives the mean
cross-entropy per class. The paper finds F→C the hardest (about 4.88 nats for its 1.5B
model). The prediction made *at* the sink (window position 0) is left out, like the sink
everywhere else in this analysis.

Example:
    >>> dec = loss_decomposition(model, docs, ft.ids, max_tokens=20_000)
    >>> dec.table            # rows: current F/C, columns: next F/C, values: mean loss
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.documents import as_documents
from workbench.models.model import WorkbenchModel
from workbench.sae.activations import residuals, window_batches
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = [
    "CLASSES",
    "LossAccumulator",
    "LossDecomposition",
    "loss_decomposition",
    "loss_over_checkpoints",
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


class LossAccumulator:
    """Running sums and counts of loss per class (constant memory)."""

    def __init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.counts = torch.zeros(4, dtype=torch.long)

    def update(
        self, losses: torch.Tensor, classes: torch.Tensor, keep: torch.Tensor | None = None
    ) -> None:
        """Add ``losses`` and ``classes`` [b, s - 1]; ``keep`` [b, s - 1] bool selects entries."""
        loss, cls = losses.detach().double().cpu(), classes.cpu()
        if keep is not None:
            loss, cls = loss[keep.cpu()], cls[keep.cpu()]
        self.sums += torch.zeros(4, dtype=torch.float64).index_add_(
            0, cls.reshape(-1), loss.reshape(-1)
        )
        self.counts += torch.bincount(cls.reshape(-1), minlength=4)

    def result(self, provenance: Provenance | None = None) -> LossDecomposition:
        if int(self.counts.sum()) == 0:
            raise FunctionTokenError("No prediction was scored: the texts are too short.")
        means = (self.sums / self.counts.clamp_min(1)).where(self.counts > 0, torch.nan)
        table = pd.DataFrame(
            means.view(2, 2).numpy(), index=["F", "C"], columns=["F", "C"]
        ).rename_axis(index="current", columns="next")
        counts = pd.DataFrame(
            self.counts.view(2, 2).numpy(), index=["F", "C"], columns=["F", "C"]
        ).rename_axis(index="current", columns="next")
        overall = float(self.sums.sum() / self.counts.sum())
        return LossDecomposition(table, counts, overall, provenance)


@dataclass
class LossDecomposition:
    """Mean loss per (current, next) class, the number of predictions, and the overall mean."""

    table: pd.DataFrame  # 2x2, index current F/C, columns next F/C
    counts: pd.DataFrame  # 2x2 prediction counts
    overall: float
    provenance: Provenance | None = field(default=None, repr=False)

    def long(self) -> pd.DataFrame:
        """One row per class: class, mean_loss, n."""
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
        return pd.DataFrame(rows)


def loss_decomposition(
    model: WorkbenchModel,
    texts: Iterable[str],
    function_ids: Sequence[int] | torch.Tensor,
    *,
    max_tokens: int = 20_000,
    length: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> LossDecomposition:
    """The 2x2 mean-loss table of ``model`` over packed windows of ``texts``."""
    texts = as_documents(texts, "loss_decomposition")
    vocab = max(len(model.tokenizer), model.adapter.vocab_size)
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[torch.as_tensor(function_ids, dtype=torch.long)] = True
    acc = LossAccumulator()
    bar = tqdm(total=max_tokens, desc="loss by class", unit="tok", disable=not progress)
    try:
        for batch in window_batches(
            model, texts, length=length, batch_size=batch_size, max_tokens=max_tokens
        ):
            logits = residuals(model, batch, [], logits=True)["logits"]
            ids = batch.to(logits.device)
            losses = token_losses(logits, ids)[:, 1:]  # drop the prediction made at the sink
            acc.update(losses, transition_classes(ids, mask)[:, 1:])
            bar.update(batch.shape[0] * (batch.shape[1] - 1))
    finally:
        bar.close()
    prov = provenance_for(
        model,
        None,
        None,
        analysis="loss_decomposition",
        max_tokens=max_tokens,
        length=length,
        n_function_tokens=int(mask.sum()),
    )
    return acc.result(prov)


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
