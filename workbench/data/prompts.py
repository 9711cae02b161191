"""The project's own prompt sets, stored as JSON that users can edit.

Each set is one file, ``<name>.json`` (or ``<name>.jsonl``, read as a list of records):

- ``ioi``: indirect-object identification templates, names and the GPT-2 small circuit;
- ``function_token_pairs``: contrastive prompt pairs for reactivation and steering.

Two copies are kept, byte for byte the same (a unit test checks): the top-level ``data/``
folder of a checkout, which is the one to edit, and ``workbench/data/``, which ships inside
the installed package. :func:`prompt_set` reads ``data/`` when the package runs from a
checkout and the packaged copy otherwise. After editing ``data/``, copy the file into
``workbench/data/`` to change the packaged default too. A path to any ``.json`` or
``.jsonl`` file works as a name, for sets of your own.

Example:
    >>> from workbench.data import prompt_set
    >>> pair = prompt_set("function_token_pairs")["pairs"][0]
    >>> pair["a"]
    'Q: What is the capital of Russia?\\nA:'
"""

from __future__ import annotations

import json
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from workbench.data.errors import PromptSetError

__all__ = ["checkout_data_dir", "prompt_set", "prompt_set_path", "prompt_sets"]

_SUFFIXES = (".json", ".jsonl")
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def checkout_data_dir() -> Path | None:
    """The top-level ``data/`` folder when the package runs from a checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "data").is_dir():
        return root / "data"
    return None


def _folders() -> list[Traversable]:
    folders: list[Traversable] = []
    checkout = checkout_data_dir()
    if checkout is not None:
        folders.append(checkout)
    folders.append(resources.files("workbench.data"))
    return folders


def prompt_sets() -> list[str]:
    """The names of the prompt sets available here, sorted.

    Example:
        >>> "ioi" in prompt_sets()
        True
    """
    names = set()
    for folder in _folders():
        for entry in folder.iterdir():
            stem, dot, suffix = entry.name.rpartition(".")
            if dot and f".{suffix}" in _SUFFIXES and entry.is_file() and _NAME.fullmatch(stem):
                names.add(stem)
    return sorted(names)


def prompt_set_path(name: str | Path) -> Traversable:
    """The file that :func:`prompt_set` reads for ``name`` (a set name or a file path)."""
    text = str(name)
    if text.endswith(_SUFFIXES) and not _NAME.fullmatch(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise PromptSetError(f"No prompt-set file {text!r}. Give a .json or .jsonl file.")
        return path
    if _NAME.fullmatch(text):
        for folder in _folders():
            for suffix in _SUFFIXES:
                entry = folder / f"{text}{suffix}"
                if entry.is_file():
                    return entry
    raise PromptSetError(
        f"Unknown prompt set {text!r}. Known sets: {', '.join(prompt_sets())}; or give the "
        "path of a .json or .jsonl file."
    )


def prompt_set(name: str | Path) -> Any:
    """A prompt set, freshly parsed: the JSON value of ``<name>.json``, or a list of the
    records of ``<name>.jsonl``.

    Example:
        >>> prompt_set("ioi")["templates"][0]
        'When {IO} and {S} went to the {PLACE}, {S} gave a {OBJECT} to'

    Raises:
        PromptSetError: an unknown name, a missing file, or a file that is not valid JSON.
    """
    entry = prompt_set_path(name)
    text = entry.read_text(encoding="utf-8")
    try:
        if entry.name.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(
            f"The prompt set {entry} is not valid JSON ({exc.msg}, line {exc.lineno}). "
            "Fix the file; git restores the shipped version."
        ) from exc
