"""Corpora (built-in, or your own files, folders and hub data sets) and prompt sets.

Example:
    >>> from workbench.data import load_corpora, load_corpus, prompt_set
    >>> docs = load_corpora({"code": "code", "prose": "prose"}, max_docs=8)
    >>> mine = load_corpus("my/wiki.jsonl", max_docs=64)  # doctest: +SKIP
    >>> prompt_set("function_token_pairs")["pairs"][0]["b"]
    'Q: What is the capital of the UK?\\nA:'
"""

from workbench.data.corpora import (
    ACCEPTED_SPECS,
    DOMAINS,
    MIN_CHARS,
    CorpusSpec,
    clean_documents,
    clean_text,
    code_corpus,
    interleave,
    load_corpora,
    load_corpus,
    prose_corpus,
)
from workbench.data.errors import (
    CorpusError,
    CorpusFormatError,
    CorpusNotFoundError,
    CorpusReadError,
    EmptyCorpusError,
    HubCorpusError,
    PromptSetError,
)
from workbench.data.prompts import prompt_set, prompt_set_path, prompt_sets

__all__ = [
    "ACCEPTED_SPECS",
    "DOMAINS",
    "MIN_CHARS",
    "CorpusError",
    "CorpusFormatError",
    "CorpusNotFoundError",
    "CorpusReadError",
    "CorpusSpec",
    "EmptyCorpusError",
    "HubCorpusError",
    "PromptSetError",
    "clean_documents",
    "clean_text",
    "code_corpus",
    "interleave",
    "load_corpora",
    "load_corpus",
    "prompt_set",
    "prompt_set_path",
    "prompt_sets",
    "prose_corpus",
]
