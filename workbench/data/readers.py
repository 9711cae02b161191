"""Raw documents from files, folders and hub data sets, before cleaning.

Each reader returns the documents of one source in a fixed order (file order, or sorted
paths for a folder); :func:`workbench.data.load_corpus` cleans, filters and samples them.
Text is decoded as UTF-8 with ``errors="replace"``, so a stray byte becomes U+FFFD
instead of an error. Files ending in ``.gz`` are decompressed first.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workbench.data.errors import (
    CorpusFormatError,
    CorpusReadError,
    EmptyCorpusError,
    HubCorpusError,
)

__all__ = ["format_suffix", "read_folder", "read_hub", "read_json", "read_jsonl", "read_txt"]

_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t\f\v]*\n)+")  # a newline, then blank lines
_BINARY_PROBE = 8192


def format_suffix(path: Path) -> str:
    """The suffix that says the format, ``.gz`` skipped: ``a.jsonl.gz`` -> ``.jsonl``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CorpusReadError(
            f"Could not read {path} ({type(exc).__name__}: {exc}). Check that it is a readable "
            "file (and, for .gz, a complete gzip file)."
        ) from exc
    return raw.decode("utf-8", errors="replace")


def read_txt(path: Path) -> list[str]:
    """One document per paragraph block: documents are separated by blank lines.

    Example:
        >>> read_txt(Path("two.txt"))  # "first doc\\nline 2\\n\\nsecond doc\\n"  # doctest: +SKIP
        ['first doc\\nline 2', 'second doc\\n']
    """
    text = _read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    return [block for block in _PARAGRAPH_BREAK.split(text) if block.strip()]


def _take(record: Any, field: str, where: str) -> str | None:
    """The document in one record: a string, or ``record[field]``; None for a null value."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if field not in record:
            keys = ", ".join(repr(k) for k in list(record)[:12])
            raise CorpusFormatError(
                f"{where} has no field {field!r}; its fields are {keys}. "
                "Name the field that holds the text, e.g. load_corpus(path, field='body') or "
                "{'source': path, 'field': 'body'} in a notebook's corpora."
            )
        value = record[field]
        if value is None or isinstance(value, str):
            return value
        raise CorpusFormatError(
            f"{where}: field {field!r} holds {type(value).__name__}, not text. "
            "Name a field whose value is a string."
        )
    raise CorpusFormatError(
        f"{where} is {type(record).__name__}; expected a string or an object with a "
        f"{field!r} field."
    )


def read_jsonl(path: Path, field: str = "text") -> list[str]:
    """One document per line: a JSON object (its ``field``) or a JSON string."""
    docs = []
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusFormatError(
                f"{path}, line {i}, is not JSON ({exc.msg}). A .jsonl file holds one JSON "
                'object per line, such as {"text": "..."}; a .txt file holds plain text.'
            ) from exc
        doc = _take(record, field, f"{path}, line {i},")
        if doc is not None:
            docs.append(doc)
    return docs


def read_json(path: Path, field: str = "text") -> list[str]:
    """A JSON list of strings, or of objects whose ``field`` holds the text."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise CorpusFormatError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}). For one document per "
            "line use a .jsonl file."
        ) from exc
    if not isinstance(data, list):
        keys = f" with keys {sorted(data)[:12]}" if isinstance(data, dict) else ""
        raise CorpusFormatError(
            f"{path} holds a JSON {type(data).__name__}{keys}; expected a list of strings or "
            f"of objects with a {field!r} field."
        )
    docs = (_take(r, field, f"{path}, item {i},") for i, r in enumerate(data))
    return [d for d in docs if d is not None]


def _text_files(root: Path) -> Iterator[Path]:
    """Non-hidden files under ``root``, in sorted order; symlinked folders are not followed."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def read_folder(root: Path) -> list[str]:
    """One document per file, every non-hidden file under ``root`` (sorted, recursive).

    Files that look binary (a NUL byte in their first 8 KiB) are skipped.
    """
    docs = []
    for path in _text_files(root):
        try:
            with path.open("rb") as f:
                probe = f.read(_BINARY_PROBE)
        except OSError as exc:
            raise CorpusReadError(
                f"Could not read {path} in the corpus folder {root} ({exc.strerror}). "
                "Fix its permissions or move it out of the folder."
            ) from exc
        if b"\x00" in probe and path.suffix.lower() != ".gz":
            continue
        docs.append(_read_text(path))
    return docs


def read_hub(
    name: str,
    *,
    config: str | None,
    split: str,
    field: str,
    limit: int,
    prepare: Callable[[str], str | None],
    hint: str = "",
    accepted: str = "",
) -> list[str]:
    """The first ``limit`` documents that ``prepare`` keeps, streamed from a hub data set.

    ``prepare`` cleans one document and returns it, or None to drop it. ``hint`` opens and
    ``accepted`` closes the message raised when ``datasets`` is not installed.

    Needs the optional ``datasets`` package and a reachable hub.
    """
    try:
        import datasets
    except ImportError:
        raise HubCorpusError(
            f"{hint}So {name!r} was taken for a hub data set id, but the optional `datasets` "
            "package is not installed: install it (pip install datasets) on a machine that "
            f"reaches a hub, or pass a local file or folder.\n{accepted}"
        ) from None
    where = f"hub data set {name!r}" + (f" (config {config!r})" if config else "")
    docs: list[str] = []
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
        for i, record in enumerate(stream):
            doc = _take(record, field, f"{where}, record {i},")
            doc = None if doc is None else prepare(doc)
            if doc is not None:
                docs.append(doc)
                if len(docs) >= limit:
                    break
    except CorpusFormatError:
        raise
    except Exception as exc:  # datasets raises many types: offline, gated, unknown id, ...
        raise HubCorpusError(
            f"Could not stream the {where}, split {split!r} ({type(exc).__name__}: {exc}). "
            "Check the id (and config) and that a hub is reachable from this machine; "
            "offline, use a local file or folder."
        ) from exc
    if not docs:
        raise EmptyCorpusError(f"The {where}, split {split!r}, gave no document in {field!r}.")
    return docs
