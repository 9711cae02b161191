"""Save and load SAEs in SAELens's on-disk layout; fetch pretrained ones from a hub.

A folder holds ``cfg.json`` and ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae],
``b_enc``, ``W_dec`` [d_sae, d_in], ``b_dec``, and ``threshold`` for JumpReLU).
``cfg.json`` carries the keys SAELens reads in both of its config generations: the flat
pre-6.0 keys (``d_in``, ``d_sae``, ``architecture``, ``hook_name``, ``hook_layer``,
``activation_fn_kwargs`` …) and the 6.x ``metadata`` block. ``sae_lens.SAE.load_from_disk``
reads such a folder; so does :func:`load_sae`, without SAELens installed.

Gemma Scope publishes ``params.npz`` files (JumpReLU) instead; :func:`load_pretrained`
reads both kinds from the hub when one is reachable.

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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.errors import WorkbenchError
from workbench.sae.model import ARCHITECTURES, SAE, SAEConfig, SAEConfigError

__all__ = [
    "CFG_FILENAME",
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


def save_sae(sae: SAE, path: str | os.PathLike) -> Path:
    """Write ``sae`` to folder ``path`` in SAELens's layout, atomically; returns the folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-sae-", dir=target.parent))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
        save_file(tensors, tmp / WEIGHTS_FILENAME)
        (tmp / CFG_FILENAME).write_text(json.dumps(_saelens_cfg(sae.cfg), indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _layer_from_hook(hook_name: str) -> int:
    m = re.search(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else 0


def config_from_saelens(d: dict[str, Any]) -> SAEConfig:
    """An :class:`SAEConfig` from a SAELens ``cfg.json`` dict (pre-6.0 or 6.x layout)."""
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
        extra={k: v for k, v in ours.items() if k != "site"},
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
    cfg = config_from_saelens(json.loads(cfg_file.read_text()))
    return _from_tensors(cfg, load_file(str(weights)), str(folder)).to(device)


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
