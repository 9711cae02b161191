"""The one check that a corpus argument is what every analysis expects: documents.

A bare string where a list of documents is expected is the classic silent mistake:
iterating it yields characters, so each character becomes a "document". Every analysis
entry point that takes texts calls :func:`as_documents` first.

Example:
    >>> as_documents(["a text", "another"], "count_tokens")
    ['a text', 'another']
    >>> as_documents("one text", "count_tokens")      # doctest: +SKIP
    DocumentsError: count_tokens expects a list of documents ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from workbench.errors import WorkbenchError

__all__ = ["DocumentsError", "as_documents"]


class DocumentsError(WorkbenchError, TypeError):
    """A corpus argument that is not a collection of strings."""


def as_documents(texts: Any, who: str) -> list[str]:
    """``texts`` as a list of strings (a generator is read once), or :class:`DocumentsError`."""
    if isinstance(texts, str | bytes):
        raise DocumentsError(
            f"{who} expects a list of documents, got a single {type(texts).__name__} of "
            f"{len(texts)} characters (each character would count as a document). Wrap it "
            "in a list: [text]."
        )
    if not isinstance(texts, Iterable):
        raise DocumentsError(
            f"{who} expects a list of documents (strings), got {type(texts).__name__}."
        )
    docs = list(texts)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise DocumentsError(
                f"{who}: document {i} is a {type(d).__name__}, not a string: {d!r:.80}"
            )
        try:
            d.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: tokenizers fail on it obscurely
            raise DocumentsError(
                f"{who}: document {i} holds a lone surrogate {d[e.start]!r} at character "
                f"{e.start}, which is not valid Unicode text (it often comes from reading bytes "
                "with errors='surrogateescape'). Clean it with workbench.data.clean_text, or "
                "load the corpus with workbench.data.load_corpus, which does."
            ) from None
    return docs
