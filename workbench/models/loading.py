"""``load_model``: one entry point for the embedded default, tiny models, folders, GGUF and hubs.

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()                      # embedded SmolLM2-135M-Instruct, offline
    >>> model = wb.load_model("tiny:GPT2LMHeadModel")  # random weights, for tests
    >>> # with a GPU and a hub: wb.load_model("meta-llama/Llama-2-7b-hf", device="cuda")
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from workbench.errors import GGUFSupportMissingError, ModelNotFoundError
from workbench.models import embedded
from workbench.models.adapters import adapter_for
from workbench.models.model import WorkbenchModel
from workbench.models.tiny import tiny_architectures, tiny_hf_model

__all__ = ["load_model", "resolve_device"]

log = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"


def resolve_device(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise GGUFSupportMissingError(
            "Loading a GGUF file needs the 'gguf' package (and 'accelerate'), which is not "
            "installed. Install it with:\n    pip install gguf accelerate"
        )


def _load_gguf(path: Path, dtype: torch.dtype | None) -> tuple[Any, Any]:
    _require_gguf()
    tf = _quiet_transformers()
    kw = {"gguf_file": path.name}
    tok = tf.AutoTokenizer.from_pretrained(str(path.parent), **kw)
    hf = tf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), dtype=dtype or torch.float32, **kw
    )
    return hf, tok


def _load_embedded(dtype: torch.dtype | None, use_cache: bool) -> tuple[Any, Any]:
    gguf = embedded.embedded_gguf_path()
    cached = embedded.converted_cache_dir(gguf)
    tf = _quiet_transformers()
    if use_cache and (cached / "config.json").is_file():
        tok = tf.AutoTokenizer.from_pretrained(str(cached))
        hf = tf.AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype or torch.float32)
        return hf, tok
    t0 = time.perf_counter()
    hf, tok = _load_gguf(gguf, torch.float32)
    log.info("Dequantized the embedded GGUF in %.1f s.", time.perf_counter() - t0)
    if use_cache:
        embedded.save_converted(hf, tok, cached)
    if dtype is not None and dtype != torch.float32:
        hf = hf.to(dtype)
    return hf, tok


def _load_pretrained(
    name: str, *, dtype: Any, device_map: Any, trust_remote_code: bool, revision: str | None
) -> tuple[Any, Any]:
    tf = _quiet_transformers()
    from workbench.models.hub import hub_reachable

    kw = {"trust_remote_code": trust_remote_code}
    if not Path(name).exists() and not hub_reachable():
        kw["local_files_only"] = True  # fail in seconds, not after a minute of retries
    if revision is not None:
        kw["revision"] = revision
    try:
        tok = tf.AutoTokenizer.from_pretrained(name, **kw)
        hf = tf.AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device_map, **kw)
    except OSError as exc:
        raise ModelNotFoundError(
            f"Could not load {name!r}: it is not a local folder or file, and the model hub "
            f"did not provide it ({type(exc).__name__}: {str(exc).splitlines()[0]:.200}).\n"
            "Without a hub, use the embedded model with load_model() (no argument), a local "
            "folder saved with save_pretrained(), a .gguf file, or a tiny random model such "
            f"as 'tiny:LlamaForCausalLM'."
        ) from exc
    return hf, tok


def load_model(
    name: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = "eager",
    trust_remote_code: bool = False,
    revision: str | None = None,
    self_test: bool = True,
    use_cache: bool = True,
    remote: bool = False,
) -> WorkbenchModel:
    """Load a causal LM and wrap it in nnsight with its family adapter.

    Args:
        name: ``None`` for the embedded SmolLM2-135M-Instruct; ``"tiny:<Architecture>"``
            for a tiny random model; a local folder; a ``.gguf`` file; or a hub id.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (``device_map="auto"`` across GPUs), or
            ``None`` for CUDA when available, else CPU.
        dtype: torch dtype; ``None`` is float32 on CPU and the checkpoint's dtype on GPU.
        attn_implementation: ``"eager"`` (default) so attention probabilities can be read
            and edited; ``"sdpa"`` is faster, and analyses that need probabilities switch
            back to eager and log that they did.
        trust_remote_code: off unless you turn it on; it runs code from the model repo.
        self_test: run the load-time checks of :func:`workbench.tracing.selftest.self_test`.
        use_cache: keep and reuse a float safetensors copy of the embedded GGUF model.
        remote: run traces on NDIF (``NDIF_API_KEY`` is read from the environment).

    Example:
        >>> model = load_model()
        >>> model.n_layers
        30
    """
    from nnsight import TransformersModel

    dev = resolve_device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    if name is None:
        hf, tok = _load_embedded(dtype, use_cache)
        model_id = f"{embedded.EMBEDDED_ID} (embedded GGUF)"
    elif isinstance(name, str) and name.startswith(TINY_PREFIX):
        hf, tok = tiny_hf_model(name[len(TINY_PREFIX) :])
        if dtype is not None:
            hf = hf.to(dtype)
        model_id = name
    elif Path(name).suffix == ".gguf":
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {str(path)!r} does not exist.")
        hf, tok = _load_gguf(path, dtype)
        model_id = str(path)
    elif Path(name).expanduser().is_dir():
        hf, tok = _load_pretrained(
            str(Path(name).expanduser()),
            dtype=dtype or torch.float32,
            device_map=None,
            trust_remote_code=trust_remote_code,
            revision=None,
        )
        model_id = str(name)
    elif remote:
        return _load_remote(str(name), attn_implementation)
    else:
        auto_dtype = dtype or (torch.float32 if dev == "cpu" else "auto")
        hf, tok = _load_pretrained(
            str(name),
            dtype=auto_dtype,
            device_map="auto" if dev == "auto" else None,
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
        model_id = str(name) + (f"@{revision}" if revision else "")
    adapter = adapter_for(hf, tok)  # before moving: fail fast on an unknown family
    if dev != "auto":
        hf = hf.to(dev)
    hf.eval()
    if attn_implementation is not None and hf.config._attn_implementation != attn_implementation:
        hf.set_attn_implementation(attn_implementation)
    model = WorkbenchModel(TransformersModel(hf, tokenizer=tok), tok, adapter, model_id)
    log.info("Loaded %s in %.1f s.", model_id, time.perf_counter() - t0)
    if self_test:
        from workbench.tracing.selftest import self_test as run_self_test

        run_self_test(model)
    return model


def _use_api_key_in_memory() -> bool:
    """Hand ``NDIF_API_KEY`` to nnsight for this process only; True if there is one.

    nnsight reads the variable once, when it is imported; a key set later (in a notebook)
    is copied into its in-memory config here. Never ``CONFIG.set_default_api_key``: that
    writes the key in plain text to nnsight's config file.
    """
    from nnsight import CONFIG

    key = os.environ.get("NDIF_API_KEY", "").strip()
    if key:
        CONFIG.API.APIKEY = key
    return bool(key or CONFIG.API.APIKEY)


def _load_remote(name: str, attn_implementation: str | None) -> WorkbenchModel:
    """A model that traces on NDIF; weights stay remote (meta tensors here)."""
    from nnsight import TransformersModel

    if not _use_api_key_in_memory():
        log.warning(
            "No NDIF API key: set the environment variable NDIF_API_KEY (it is used for "
            "this process only and never written to disk); remote traces will be refused."
        )
    try:
        nn_model = TransformersModel(name, attn_implementation=attn_implementation)
    except (OSError, RuntimeError, ValueError) as exc:  # nnsight wraps hub errors
        raise ModelNotFoundError(
            f"Could not load the configuration of {name!r} for a remote (NDIF) model: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]:.200}. A remote model still "
            "needs its config and tokenizer from the model hub; check the id and that the "
            "hub is reachable (workbench doctor)."
        ) from exc
    model = WorkbenchModel(
        nn_model, nn_model.tokenizer, adapter_for(nn_model._module, nn_model.tokenizer), name
    )
    model.remote = True
    return model


def available_models() -> dict[str, str]:
    """What ``load_model`` can load offline: the embedded default and the tiny models."""
    out = {"(none)": f"{embedded.EMBEDDED_ID}, the embedded default"}
    for arch in tiny_architectures():
        out[TINY_PREFIX + arch] = "tiny random-weight model"
    return out
