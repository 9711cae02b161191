"""Text corpora: the built-in offline ones, or your own file, folder or hub data set.

Built-in names (no data-set hub is reachable here, so both come from local text):

- ``"code"``: the Python standard library's own ``.py`` sources, one document per file;
- ``"prose"``: the help topics in ``pydoc_data`` plus the licence texts that Debian ships
  under ``/usr/share/common-licenses`` (when that folder exists).

Your own data (see :func:`load_corpus` for every accepted form): a ``.txt`` file (one
document per blank-line-separated block), a ``.jsonl`` or ``.json`` file, a folder of
text files (one document per file), or a ``datasets`` hub id, streamed.

Every source goes through the same cleaning (:func:`clean_text`, then documents that are
blank or shorter than ``min_chars`` are dropped) and the same seeded sampling. Local
documents come in a fixed, sorted order, so a seed gives the same sample on every machine
with the same files.

Example:
    >>> from workbench.data import load_corpus, load_corpora
    >>> len(load_corpus("prose", max_docs=3))
    3
    >>> docs = load_corpora({"code": "code", "wiki": "my/wiki.jsonl"}, max_docs=8)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import re
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.data import readers
from workbench.data.errors import (
    CorpusError,
    CorpusFormatError,
    CorpusNotFoundError,
    EmptyCorpusError,
)

__all__ = [
    "ACCEPTED_SPECS",
    "DOMAINS",
    "HUB_MAX_DOCS",
    "MIN_CHARS",
    "CorpusError",
    "CorpusSpec",
    "clean_documents",
    "clean_text",
    "code_corpus",
    "interleave",
    "load_corpora",
    "load_corpus",
    "prose_corpus",
]

DOMAINS = ("code", "prose")  # the built-in corpus names
LICENSE_DIR = Path("/usr/share/common-licenses")
MIN_CHARS = 200  # documents shorter than this (after cleaning) are dropped
HUB_MAX_DOCS = 1000  # documents streamed from a hub data set when max_docs is None
SPEC_KEYS = ("source", "field", "config", "split", "max_docs", "min_chars", "seed")

_TEXT_SUFFIXES = {".txt", ".text", ".md"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_HUB_ID = re.compile(r"[\w.-]+(?:/[\w.-]+)?(?::[\w.-]+)?")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

CorpusSpec = str | os.PathLike[str] | Mapping[str, Any] | Sequence[str]

ACCEPTED_SPECS = """\
A corpus spec is one of:
  - a built-in name: 'code' (Python stdlib sources) or 'prose' (pydoc topics, licences);
  - a .txt (or .md) file: one document per block of lines, blocks separated by blank lines;
  - a .jsonl file: one JSON object per line, the text in field 'text' (or field=...);
  - a .json file: a list of strings, or of objects with the text in field 'text';
  - a folder: one document per (non-hidden, non-binary) file, recursively;
  - a hub data set id such as 'Salesforce/wikitext:wikitext-2-raw-v1' ('id:config'),
    streamed (needs `pip install datasets` and a reachable hub);
  - a dict {'source': <one of the above>, 'field': ..., 'config': ..., 'split': ...,
    'max_docs': ..., 'min_chars': ..., 'seed': ...};
  - a list of strings: documents you already hold.
Files may end in .gz. Relative paths are looked up in the working directory, then in the
directory `workbench run` was started from."""


# -- cleaning ------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """One document, cleaned the same way for every source.

    Line ends become ``\\n``; a lone UTF-16 surrogate (which cannot be encoded, e.g. from a
    JSON ``"\\ud800"`` escape) becomes U+FFFD; NUL characters and a leading byte-order mark
    are removed. Nothing else changes: indentation and inner whitespace are kept.

    Example:
        >>> clean_text("\\ufeffa\\r\\nb\\ud800\\x00")
        'a\\nb\\ufffd'
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _SURROGATE.sub("\ufffd", text)
    return text.removeprefix("\ufeff")


def _keep(text: str, min_chars: int) -> str | None:
    text = clean_text(text)
    return text if text.strip() and len(text) >= min_chars else None


def clean_documents(docs: Sequence[str], *, min_chars: int = MIN_CHARS) -> list[str]:
    """:func:`clean_text` on each document; blank ones and those under ``min_chars`` dropped.

    Example:
        >>> clean_documents(["  \\n", "short", "long enough\\r\\n"], min_chars=6)
        ['long enough\\n']
    """
    return [d for d in (_keep(t, min_chars) for t in docs) if d is not None]


def _finish(
    docs: Sequence[str], *, label: str, max_docs: int | None, min_chars: int, seed: int
) -> list[str]:
    """Clean, filter and (when ``max_docs`` is smaller than what is left) sample."""
    kept = clean_documents(docs, min_chars=min_chars)
    if not kept:
        blank = sum(1 for d in docs if not clean_text(d).strip())
        raise EmptyCorpusError(
            f"{label} gave no document: {len(docs)} read, {blank} blank, "
            f"{len(docs) - blank} shorter than min_chars={min_chars}. "
            + (
                "Pass a smaller min_chars (e.g. min_chars=1) to keep short documents."
                if len(docs) > blank
                else "Check that the source holds text."
            )
        )
    if max_docs is not None and max_docs < len(kept):
        kept = random.Random(seed).sample(kept, max_docs)
    return kept


# -- built-in corpora ----------------------------------------------------------------------


def _code_docs() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file() and not p.name.startswith("_"))
    docs = []
    for p in files:
        try:
            docs.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return docs


def _prose_docs() -> list[str]:
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    if LICENSE_DIR.is_dir():
        for p in sorted(LICENSE_DIR.iterdir()):
            if p.is_file() and not p.is_symlink():
                try:
                    docs.append(p.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, OSError):
                    continue
    return docs


_BUILTINS: dict[str, Callable[[], list[str]]] = {"code": _code_docs, "prose": _prose_docs}


def code_corpus(
    max_docs: int | None = None, *, seed: int = 0, min_chars: int = MIN_CHARS
) -> list[str]:
    """Python standard-library source files, one document per file (``load_corpus("code")``)."""
    return load_corpus("code", max_docs=max_docs, seed=seed, min_chars=min_chars)


def prose_corpus(
    max_docs: int | None = None, *, seed: int = 0, min_chars: int = MIN_CHARS
) -> list[str]:
    """English prose: pydoc help topics and Debian's licence texts (``load_corpus("prose")``)."""
    return load_corpus("prose", max_docs=max_docs, seed=seed, min_chars=min_chars)


# -- specs ---------------------------------------------------------------------------------


def _search_roots() -> list[Path]:
    """Where a relative path is looked up: the working directory, then the caller's."""
    roots = [Path.cwd()]
    for var in ("WORKBENCH_RUN_CWD", "PWD"):
        value = os.environ.get(var)
        if value and Path(value).is_dir() and Path(value).resolve() not in roots:
            roots.append(Path(value).resolve())
    return roots


def _resolve(path: Path) -> tuple[Path | None, list[Path]]:
    """The existing path that ``path`` names, and the places looked at."""
    path = path.expanduser()
    tried = [path] if path.is_absolute() else [root / path for root in _search_roots()]
    return next((p for p in tried if p.exists()), None), tried


def _looks_like_path(text: str) -> bool:
    suffixes = {s.lower() for s in Path(text).suffixes}
    known = _TEXT_SUFFIXES | _JSONL_SUFFIXES | {".json", ".gz"}
    return bool(suffixes & known) or text.startswith(("/", "./", "../", "~", "."))


def _read_path(path: Path, field: str) -> list[str]:
    if path.is_dir():
        return readers.read_folder(path)
    suffix = readers.format_suffix(path)
    if suffix in _TEXT_SUFFIXES:
        return readers.read_txt(path)
    if suffix in _JSONL_SUFFIXES:
        return readers.read_jsonl(path, field)
    if suffix == ".json":
        return readers.read_json(path, field)
    raise CorpusFormatError(
        f"{path} has the suffix {suffix or '(none)'!r}, which says no format. Rename it to "
        f".txt, .jsonl or .json, or put it in a folder (one document per file).\n"
        f"{ACCEPTED_SPECS}"
    )


def _check_count(name: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise CorpusError(f"{name} must be an integer or None; got {value!r}.")
    if value is not None and value < minimum:
        raise CorpusError(f"{name} must be at least {minimum}; got {value}.")


def load_corpus(
    spec: CorpusSpec,
    *,
    max_docs: int | None = None,
    min_chars: int = MIN_CHARS,
    seed: int = 0,
    field: str = "text",
    config: str | None = None,
    split: str = "train",
) -> list[str]:
    """The documents of one corpus, cleaned, as a list of strings.

    Args:
        spec: a built-in name (``"code"``, ``"prose"``), a ``.txt``/``.jsonl``/``.json``
            file, a folder, a hub data set id (``"owner/name"`` or ``"owner/name:config"``),
            a dict ``{"source": ..., "field": ...}`` whose keys override the arguments below,
            or a list of documents; see :data:`ACCEPTED_SPECS`.
        max_docs: at most this many documents, sampled with ``seed`` from a local source;
            from a hub, the first ``max_docs`` in stream order (default ``HUB_MAX_DOCS``).
        min_chars: documents shorter than this after :func:`clean_text` are dropped.
        seed: the sampling seed.
        field: the field that holds the text in JSON objects and hub records.
        config, split: the hub data set's configuration and split.

    Example:
        >>> len(load_corpus("code", max_docs=2, seed=1))
        2
        >>> load_corpus({"source": "wiki.jsonl", "field": "body"}, max_docs=64)  # doctest: +SKIP

    Raises:
        CorpusNotFoundError: ``spec`` names nothing that exists.
        CorpusReadError: a file that cannot be read.
        CorpusFormatError: bad JSON, a missing field, a suffix that says no format.
        EmptyCorpusError: no document passed cleaning.
        HubCorpusError: ``datasets`` is not installed or the hub cannot be reached.
    """
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown or "source" not in spec:
            raise CorpusError(
                f"A dict corpus spec needs 'source' and takes only {list(SPEC_KEYS)}; got "
                f"{sorted(spec)}.\n{ACCEPTED_SPECS}"
            )
        options = {
            "max_docs": max_docs,
            "min_chars": min_chars,
            "seed": seed,
            "field": field,
            "config": config,
            "split": split,
        }
        options.update({k: v for k, v in spec.items() if k != "source"})
        return load_corpus(spec["source"], **options)
    _check_count("max_docs", max_docs, 1)
    _check_count("min_chars", min_chars, 0)
    finish = dict(max_docs=max_docs, min_chars=min_chars, seed=seed)

    if isinstance(spec, Sequence) and not isinstance(spec, str):
        bad = [i for i, d in enumerate(spec) if not isinstance(d, str)]
        if bad:
            raise CorpusFormatError(
                f"A list corpus spec holds documents (strings); item {bad[0]} is "
                f"{type(spec[bad[0]]).__name__}.\n{ACCEPTED_SPECS}"
            )
        return _finish(list(spec), label=f"the list of {len(spec)} documents", **finish)
    if not isinstance(spec, str | os.PathLike):
        raise CorpusError(f"Cannot read a corpus from {type(spec).__name__}.\n{ACCEPTED_SPECS}")
    if isinstance(spec, str) and spec in _BUILTINS:
        return _finish(_BUILTINS[spec](), label=f"The built-in {spec!r} corpus", **finish)

    text = os.fspath(spec)
    path, tried = _resolve(Path(text))
    if path is not None:
        return _finish(_read_path(path, field), label=str(path), **finish)
    looked = ", ".join(str(p) for p in tried)
    if not isinstance(spec, str) or _looks_like_path(text):
        raise CorpusNotFoundError(
            f"No file or folder {text!r} (looked at {looked}).\n{ACCEPTED_SPECS}"
        )
    if not _HUB_ID.fullmatch(text):
        what = "looks like text" if re.search(r"\s", text) else "is no valid hub id"
        raise CorpusNotFoundError(
            f"{text[:60]!r} is not a built-in name ({', '.join(DOMAINS)}), names no file or "
            f"folder, and {what}. To use text you hold, pass a list of documents: "
            f"load_corpus([text]).\n{ACCEPTED_SPECS}"
        )
    name, _, id_config = text.partition(":")
    return _finish(
        readers.read_hub(
            name,
            config=config or id_config or None,
            split=split,
            field=field,
            limit=max_docs or HUB_MAX_DOCS,
            prepare=lambda d: _keep(d, min_chars),
            hint=f"{text!r} is not a built-in name ({', '.join(DOMAINS)}) and names no file "
            f"or folder (looked at {looked}). ",
            accepted=ACCEPTED_SPECS,
        ),
        label=f"hub data set {text!r}",
        **finish,
    )


def load_corpora(
    corpora: Mapping[str, CorpusSpec],
    *,
    max_docs: int | None = None,
    min_chars: int = MIN_CHARS,
    seed: int = 0,
    field: str = "text",
) -> dict[str, list[str]]:
    """:func:`load_corpus` for each domain: ``{domain: spec}`` -> ``{domain: documents}``.

    The keyword arguments apply to every domain; a dict spec overrides them for its own.

    Example:
        >>> docs = load_corpora({"code": "code", "prose": "prose"}, max_docs=4)
        >>> {k: len(v) for k, v in docs.items()}
        {'code': 4, 'prose': 4}
    """
    if not isinstance(corpora, Mapping) or not corpora:
        got = f"an empty {type(corpora).__name__}" if not corpora else type(corpora).__name__
        raise CorpusError(
            "corpora must be a non-empty mapping from domain name to corpus spec, such as "
            f"{{'code': 'code', 'wiki': 'my/wiki.jsonl'}}; got {got}.\n{ACCEPTED_SPECS}"
        )
    out = {}
    for domain, spec in corpora.items():
        try:
            out[str(domain)] = load_corpus(
                spec, max_docs=max_docs, min_chars=min_chars, seed=seed, field=field
            )
        except CorpusError as exc:
            raise type(exc)(f"Domain {domain!r}: {exc}") from exc
    return out


def interleave(corpora: Mapping[str, Sequence[str]], *, seed: int = 0) -> list[str]:
    """One stream of documents: each domain shuffled (one seeded generator, in mapping
    order), then taken in turn, so that every prefix holds all domains.

    ``interleave(load_corpora({"prose": "prose", "code": "code"}))`` is the corpus that
    notebook 01 has always used (``function_tokens.corpus()``).

    Example:
        >>> interleave({"a": ["a1", "a2"], "b": ["b1"]}, seed=0)
        ['a1', 'b1', 'a2']
    """
    rng = random.Random(seed)
    lists = [list(docs) for docs in corpora.values()]
    for docs in lists:
        rng.shuffle(docs)
    out: list[str] = []
    for i in range(max((len(d) for d in lists), default=0)):
        out.extend(d[i] for d in lists if i < len(d))
    return out
