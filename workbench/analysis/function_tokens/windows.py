"""Packed windows that remember which document each token came from.

The same packing as :func:`workbench.sae.token_windows` (documents joined with the
end-of-text token, cut into windows of ``length``, BOS first where the tokenizer adds
one), plus a document number per position. It lets the analyses

- keep per-document sums, which the document bootstrap resamples
  (:mod:`workbench.analysis.uncertainty`);
- tell a prediction that crosses a document boundary from one inside a document.

The separator belongs to the document it ends; a BOS added at the start of a window
belongs to none (``-1``).

Example:
    >>> pw = packed_windows(model, docs, length=128, max_tokens=20_000)
    >>> pw.ids.shape, pw.doc.shape          # [windows, 128] each
    >>> pw.crosses_boundary()               # [windows, 127] bool, per prediction
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.models.model import WorkbenchModel
from workbench.sae.activations import iter_packed

__all__ = ["PackedWindows", "packed_windows"]


@dataclass
class PackedWindows:
    """Token ids ``[n, length]``, the document of each position ``[n, length]`` (-1: BOS),
    the separator id (``None`` when the tokenizer has none) and the number of documents
    read."""

    ids: torch.Tensor
    doc: torch.Tensor
    separator: int | None
    n_docs: int

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(ids, doc)`` batches of ``batch_size`` windows, in order."""
        for i in range(0, self.ids.shape[0], batch_size):
            yield self.ids[i : i + batch_size], self.doc[i : i + batch_size]

    def crosses_boundary(self) -> torch.Tensor:
        """``[n, length - 1]`` bool: prediction ``t -> t + 1`` involves the separator
        (predicting it, or predicting the next document's first token from it) or joins two
        documents."""
        cur, nxt = self.doc[:, :-1], self.doc[:, 1:]
        cross = (cur != nxt) & (cur >= 0)
        if self.separator is not None:
            sep = self.ids == self.separator
            cross |= sep[:, :-1] | sep[:, 1:]
        return cross


def packed_windows(
    model: WorkbenchModel,
    texts: Iterable[str],
    *,
    length: int = 128,
    max_tokens: int | None = None,
    max_doc_tokens: int | None = None,
) -> PackedWindows:
    """Pack ``texts`` into windows with a document number per position.

    ``max_tokens`` caps the analysed tokens (every position after the first of a
    window), rounded up to whole windows, exactly as :func:`workbench.sae.token_windows`.
    ``max_doc_tokens`` keeps only the first tokens of each document, so that a token
    budget spans more documents (more documents, tighter bootstrap intervals); ``None``
    packs whole documents, identical to ``token_windows``.

    Raises:
        FunctionTokenError: the texts hold fewer tokens than one window.
    """
    ids, docs = [], []
    if max_doc_tokens is not None and max_doc_tokens < 1:
        raise FunctionTokenError(f"max_doc_tokens must be at least 1, got {max_doc_tokens}.")
    if length < 2:
        raise FunctionTokenError(
            f"Windows need 2 or more tokens (a sink and one more); got length={length}."
        )
    for w, d in iter_packed(
        model, texts, length=length, max_tokens=max_tokens, max_doc_tokens=max_doc_tokens
    ):
        ids.append(w)
        docs.append(d)
    if not ids:
        raise FunctionTokenError(
            f"The texts hold fewer tokens than one window of {length}. Give more text or a "
            "smaller window length."
        )
    doc = torch.tensor(docs, dtype=torch.long)
    return PackedWindows(
        torch.tensor(ids, dtype=torch.long),
        doc,
        model.tokenizer.eos_token_id,
        int(doc.max()) + 1,
    )
