"""Save and load SAEs in SAELens's on-disk layout; fetch pretrained ones from a hub.

A folder holds ``cfg.json`` and ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae],
``b_enc``, ``W_dec`` [d_sae, d_in], ``b_dec``, and ``threshold`` for JumpReLU).
``cfg.json`` carries the keys SAELens reads in both of its config generations: the flat
pre-6.0 keys (``d_in``, ``d_sae``, ``architecture``, ``hook_name``, ``hook_layer``,
``activation_fn_kwargs`` …) and the 6.x ``metadata`` block. ``sae_lens.SAE.load_from_disk``
reads such a folder; so does :func:`load_sae`, without SAELens installed.

Gemma Scope publishes ``params.npz`` files (JumpReLU) instead; :func:`load_pretrained`
reads both kinds from the hub when one is reachable.

``save_sae`` never removes a file it did not write: ``cfg.json`` lists the files it wrote
(``workbench.files``, with their sizes), a folder holding anything else is refused unless
``overwrite=True``, and even then only those two files are replaced. A truncated or broken
file is reported by name, with how to recover.

Example:
    >>> save_sae(sae, "saes/L6")                   # cfg.json + sae_weights.safetensors
    >>> sae = load_sae("saes/L6")
    >>> sae = load_pretrained("google/gemma-scope-2b-pt-res",
    ...                       "layer_20/width_16k/average_l0_71")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from workbench.errors import WorkbenchError
from workbench.sae.model import ARCHITECTURES, SAE, SAEConfig, SAEConfigError
from workbench.storage import atomic_dir, atomic_write, atomic_write_text

__all__ = [
    "CFG_FILENAME",
    "SAECorruptError",
    "SAEFolderInUseError",
    "SAEMissingError",
    "TRAIN_HINT",
    "WEIGHTS_FILENAME",
    "gemma_scope_folder",
    "load_pretrained",
    "load_sae",
    "save_sae",
]

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# The SAELens version whose config layout we write (the 6.x "metadata" block).
SAELENS_FORMAT_VERSION = "6.5.0"

TRAIN_HINT = (
    "Train one offline (a few minutes on a CPU) with\n"
    "    .venv/bin/python -m benchmarks.train_saes\n"
    "or in Python with workbench.sae.train_saes(model, texts, layers=[...]) (see "
    "notebooks/01_function_tokens.ipynb); or, with a model hub, fetch a pretrained "
    "SAELens or Gemma Scope SAE with workbench.sae.load_pretrained(repo_id, folder)."
)


class SAEMissingError(WorkbenchError, FileNotFoundError):
    """No SAE where one was asked for (an empty folder, or a hub that cannot be reached)."""


class SAEFolderInUseError(WorkbenchError, FileExistsError):
    """``save_sae`` was pointed at a folder holding files it did not write."""


class SAECorruptError(SAEConfigError):
    """An SAE file that is truncated, not valid JSON / safetensors, or lacks a needed key."""


def _recover(folder: Path) -> str:
    return (
        f"Delete the folder (rm -r {folder}) and save or train the SAE again (a cached SAE "
        f"is retrained on the next run); or fetch it again from where it came from. "
        f"{TRAIN_HINT}"
    )


def _saelens_cfg(cfg: SAEConfig) -> dict[str, Any]:
    meta = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_layer": cfg.hook_layer,
        "hook_head_index": None,
        "prepend_bos": False,
        "context_size": cfg.context_size,
        "dataset_path": cfg.dataset_path,
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": SAELENS_FORMAT_VERSION,
    }
    flat = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "finetuning_scaling_factor": False,
        "activation_fn": "topk" if cfg.architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if cfg.architecture == "topk" else {},
        **{k: v for k, v in meta.items() if not k.startswith("sae_lens")},
    }
    if cfg.architecture == "topk":
        flat["k"] = cfg.k
    return {**flat, "metadata": meta, "workbench": {"site": cfg.site, **cfg.extra}}


def _written_by_us(folder: Path) -> dict[str, Any] | None:
    """The files an earlier :func:`save_sae` wrote into ``folder`` (its manifest), or None."""
    try:
        cfg = json.loads((folder / CFG_FILENAME).read_text())
        files = cfg["workbench"]["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def save_sae(sae: SAE, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``sae`` to folder ``path`` in SAELens's layout; returns the folder.

    A new folder is written atomically. An existing one is used only if it is empty or an
    earlier ``save_sae`` wrote it (its ``cfg.json`` lists the files); then only those files
    are replaced, each atomically, and anything else in the folder is left alone.

    Args:
        overwrite: also write into a folder holding files ``save_sae`` did not write; only
            ``cfg.json`` and ``sae_weights.safetensors`` are replaced, nothing is removed.

    Raises:
        SAEFolderInUseError: ``path`` is a file, or a folder holding other files (and not
            ``overwrite``).
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise SAEFolderInUseError(
            f"Cannot save the SAE to {str(target)!r}: it is a file, and an SAE is a folder "
            f"({CFG_FILENAME} + {WEIGHTS_FILENAME}). Choose a folder path."
        )
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    cfg = _saelens_cfg(sae.cfg)

    def write_into(folder: Path) -> None:
        atomic_write(folder / WEIGHTS_FILENAME, lambda f: f.write(st_save(tensors)))
        size = (folder / WEIGHTS_FILENAME).stat().st_size
        cfg["workbench"]["files"] = {WEIGHTS_FILENAME: size, CFG_FILENAME: None}
        atomic_write_text(folder / CFG_FILENAME, json.dumps(cfg, indent=1))  # last: the manifest

    if not target.exists():
        with atomic_dir(target) as tmp:
            write_into(tmp)
        return target
    ours = _written_by_us(target)
    held = sorted(p.name for p in target.iterdir())
    if ours is None and held and not overwrite:
        raise SAEFolderInUseError(
            f"Cannot save the SAE to {str(target)!r}: the folder holds {held[:10]}"
            f"{' ...' if len(held) > 10 else ''}, which save_sae did not write (its "
            f"{CFG_FILENAME} does not list them). Nothing was changed. Choose a new or empty "
            f"folder, or pass overwrite=True to write {CFG_FILENAME} and {WEIGHTS_FILENAME} "
            "there (other files are kept)."
        )
    write_into(target)
    for name in ours or {}:  # files an earlier save wrote that this one no longer does
        old = target / str(name)
        if name not in (CFG_FILENAME, WEIGHTS_FILENAME) and old.parent == target and old.is_file():
            old.unlink()
    return target


def _layer_from_hook(hook_name: str) -> int:
    m = re.search(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else 0


def config_from_saelens(d: dict[str, Any], where: str = CFG_FILENAME) -> SAEConfig:
    """An :class:`SAEConfig` from a SAELens ``cfg.json`` dict (pre-6.0 or 6.x layout).

    Raises:
        SAECorruptError: ``d`` is not a dict, or lacks ``d_in`` / ``d_sae`` as integers.
    """
    if not isinstance(d, dict):
        raise SAECorruptError(
            f"{where} holds a JSON {type(d).__name__}, but an SAE config is a JSON object "
            "with d_in, d_sae and architecture."
        )
    for key in ("d_in", "d_sae"):
        value = d.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SAECorruptError(
                f"{where} has no {key!r} (an integer: the SAE's "
                f"{'input width, the model d_model' if key == 'd_in' else 'number of features'}"
                f"); got {value!r}. Its keys: {sorted(d)[:20]}."
            )
        try:
            int(value)
        except ValueError:
            raise SAECorruptError(f"{where}: {key!r} must be an integer; got {value!r}.") from None
    meta = d.get("metadata") or d.get("meta") or {}
    arch = d.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise SAEConfigError(
            f"SAE architecture {arch!r} is not supported here; supported: {ARCHITECTURES}."
        )
    k = d.get("k") or (d.get("activation_fn_kwargs") or {}).get("k")
    hook_name = d.get("hook_name") or d.get("hook_point") or meta.get("hook_name") or ""
    layer = d.get("hook_layer", meta.get("hook_layer"))
    site_match = re.search(r"hook_(resid_pre|resid_mid|resid_post|mlp_out|attn_out)$", hook_name)
    ours = d.get("workbench") or {}
    return SAEConfig(
        d_in=int(d["d_in"]),
        d_sae=int(d["d_sae"]),
        architecture=arch,
        k=int(k) if k is not None else None,
        hook_layer=int(layer) if layer is not None else _layer_from_hook(hook_name),
        site=ours.get("site") or (site_match.group(1) if site_match else "resid_post"),
        model_name=d.get("model_name") or meta.get("model_name") or "",
        dtype=str(d.get("dtype", "float32")).removeprefix("torch."),
        device="cpu",
        apply_b_dec_to_input=bool(d.get("apply_b_dec_to_input", True)),
        context_size=d.get("context_size", meta.get("context_size")),
        dataset_path=d.get("dataset_path") or meta.get("dataset_path") or "",
        extra={k: v for k, v in ours.items() if k not in ("site", "files")},
    )


def _from_tensors(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: str) -> SAE:
    needed = {"W_enc", "b_enc", "W_dec", "b_dec"} | (
        {"threshold"} if cfg.architecture == "jumprelu" else set()
    )
    missing = needed - set(tensors)
    if missing:
        raise SAEConfigError(f"{where} lacks tensors {sorted(missing)}; has {sorted(tensors)}.")
    expect = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_enc": (cfg.d_sae,),
        "b_dec": (cfg.d_in,),
    }
    for name, shape in expect.items():
        if tuple(tensors[name].shape) != shape:
            raise SAEConfigError(
                f"{where}: {name} has shape {list(tensors[name].shape)}, but cfg.json "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs {list(shape)}."
            )
    sae = SAE(cfg)
    dtype = getattr(torch, cfg.dtype)
    sae.load_state_dict({k: tensors[k].to(dtype) for k in needed})
    return sae.eval()


def load_sae(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> SAE:
    """Load an SAE saved in SAELens's layout (by :func:`save_sae` or by SAELens).

    Raises:
        SAEMissingError: ``path`` holds no ``cfg.json`` / ``sae_weights.safetensors``; the
            message says how to train or fetch one.
    """
    folder = Path(path).expanduser()
    cfg_file, weights = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
    if not (cfg_file.is_file() and weights.is_file()):
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        where = "does not exist" if have is None else f"holds {have or 'nothing'}"
        raise SAEMissingError(
            f"No SAE at {str(folder)!r}: it {where}, but an SAE folder needs "
            f"{CFG_FILENAME} and {WEIGHTS_FILENAME} (SAELens layout). {TRAIN_HINT}"
        )
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SAECorruptError(
            f"{cfg_file} is not valid JSON ({type(exc).__name__}: {exc}); the file was "
            f"truncated or edited. {_recover(folder)}"
        ) from None
    try:
        cfg = config_from_saelens(raw, where=str(cfg_file))
    except SAECorruptError as exc:
        raise SAECorruptError(f"{exc} {_recover(folder)}") from None
    listed = _written_by_us(folder) or {}
    size, want = weights.stat().st_size, listed.get(WEIGHTS_FILENAME)
    if isinstance(want, int) and size != want:
        raise SAECorruptError(
            f"{weights} has {size} bytes, but save_sae wrote {want}: the file is truncated "
            f"or was replaced. {_recover(folder)}"
        )
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        raise SAECorruptError(
            f"{weights} could not be read as safetensors ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is truncated or corrupt. {_recover(folder)}"
        ) from None
    return _from_tensors(cfg, tensors, str(folder)).to(device)


# -- hub ------------------------------------------------------------------------------------


def gemma_scope_folder(files: list[str], layer: int, width: str = "16k", l0: float = 100) -> str:
    """The Gemma Scope folder for ``layer`` and ``width`` whose average L0 is nearest ``l0``.

    ``files`` is the repo's file list (``huggingface_hub.list_repo_files``), so nothing is
    guessed: e.g. ``layer_20/width_16k/average_l0_71``.
    """
    pat = re.compile(rf"^layer_{layer}/width_{width}/average_l0_(\d+)/params\.npz$")
    found = [(int(m.group(1)), f.rsplit("/", 1)[0]) for f in files if (m := pat.match(f))]
    if not found:
        raise SAEMissingError(
            f"The repository has no Gemma Scope SAE for layer {layer} at width {width}. "
            "Pick another layer or width (see the repo's folders)."
        )
    return min(found, key=lambda t: abs(t[0] - l0))[1]


def _gemma_scope_config(repo_id: str, folder: str, d_in: int, d_sae: int) -> SAEConfig:
    m = re.search(r"layer_(\d+)", folder)
    model = re.search(r"gemma-scope-(\w+?)-(pt|it)", repo_id)
    return SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture="jumprelu",
        hook_layer=int(m.group(1)) if m else 0,
        site="resid_post",
        model_name=f"gemma-2-{model.group(1)}" if model else "",
        apply_b_dec_to_input=False,
        context_size=1024,
        dataset_path="monology/pile-uncopyrighted",
        extra={"source": f"{repo_id}/{folder}"},
    )


def load_pretrained(
    repo_id: str, folder: str, *, device: str | torch.device = "cpu", revision: str | None = None
) -> SAE:
    """Download and load a pretrained SAE: a SAELens folder, or a Gemma Scope ``params.npz``.

    Example:
        >>> load_pretrained("google/gemma-scope-9b-pt-res", "layer_20/width_16k/average_l0_68")
    """
    from workbench.models.hub import hub_reachable

    if not hub_reachable():
        raise SAEMissingError(
            f"Cannot fetch the SAE {repo_id}/{folder}: no model hub is reachable from this "
            f"machine. {TRAIN_HINT}"
        )
    from huggingface_hub import hf_hub_download, list_repo_files

    files = list_repo_files(repo_id, revision=revision)
    prefix = folder.strip("/")
    if f"{prefix}/{CFG_FILENAME}" in files:
        for name in (CFG_FILENAME, WEIGHTS_FILENAME):
            local = hf_hub_download(repo_id, f"{prefix}/{name}", revision=revision)
        return load_sae(Path(local).parent, device=device)
    if f"{prefix}/params.npz" in files:
        import numpy as np

        local = hf_hub_download(repo_id, f"{prefix}/params.npz", revision=revision)
        with np.load(local) as data:
            tensors = {
                ("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(data[k]).float()
                for k in data
            }
        d_in, d_sae = tensors["W_enc"].shape
        cfg = _gemma_scope_config(repo_id, prefix, int(d_in), int(d_sae))
        return _from_tensors(cfg, tensors, f"{repo_id}/{prefix}").to(device)
    holders = sorted({f.rsplit("/", 1)[0] for f in files if f.endswith((CFG_FILENAME, ".npz"))})
    raise SAEMissingError(
        f"{repo_id} has no SAE in {prefix!r} (neither {CFG_FILENAME} nor params.npz). "
        f"Folders that hold one: {holders[:20]}"
    )
