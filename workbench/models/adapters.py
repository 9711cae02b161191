"""Family adapters: where each supported architecture keeps its parts.

An adapter is chosen by the HF architecture class (``type(model).__name__``), never by
a substring of the model's name. The table lives in ``families.json`` beside this file.

Example:
    >>> from workbench.models.adapters import supported_architectures
    >>> "LlamaForCausalLM" in supported_architectures()
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import torch

from workbench.errors import UnsupportedArchitectureError

__all__ = ["FamilyAdapter", "adapter_for", "supported_architectures", "family_table"]


@cache
def family_table() -> dict[str, Any]:
    text = resources.files("workbench.models").joinpath("families.json").read_text()
    return json.loads(text)


def supported_architectures() -> list[str]:
    """Every HF architecture class with an adapter, sorted."""
    fams = family_table()["_families"]
    return sorted(a for f in fams.values() for a in f["architectures"])


@dataclass(frozen=True)
class FamilyAdapter:
    """Module paths and head geometry of one loaded model.

    Paths are dotted, relative to the ``*ForCausalLM`` module; per-layer paths
    (``attn``, ``mlp``, the norms...) are relative to one decoder layer.
    ``None`` means the family has no such module.
    """

    architecture: str
    family: str
    layers: str
    attn: str
    o_proj: str
    q_proj: str
    k_proj: str
    v_proj: str
    mlp: str
    mlp_out_proj: str
    input_norm: str | None
    post_attn_norm: str | None
    pre_mlp_norm: str | None
    post_mlp_norm: str | None
    final_norm: str
    embed: str
    pos_embed: str | None
    unembed: str
    parallel_residual: bool
    final_softcap: float | None
    attn_softcap: float | None
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    vocab_size: int
    max_context: int | None
    adds_bos: bool

    @property
    def fused_qkv(self) -> bool:
        return self.q_proj == self.k_proj == self.v_proj

    def softcap_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The family's final logit soft-cap (Gemma-2: ``tanh(x / c) * c``), else ``logits``."""
        if not self.final_softcap:
            return logits
        return torch.tanh(logits / self.final_softcap) * self.final_softcap

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head: head h reads kv head ``h // kv_group``."""
        return self.n_heads // self.n_kv_heads


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _from_config(config: Any, spec: Any) -> Any:
    """A value given as ``"config.<attr>"`` read from the config, else ``spec`` itself."""
    if isinstance(spec, str) and spec.startswith("config."):
        return getattr(config, spec.split(".", 1)[1], None)
    return spec


def adapter_for(hf_model: Any, tokenizer: Any = None) -> FamilyAdapter:
    """The adapter of a loaded HF causal LM, with head counts read from its config."""
    arch = type(hf_model).__name__
    table = family_table()
    for fam_name, fam in table["_families"].items():  # noqa: B007 (used after the loop)
        if arch in fam["architectures"]:
            break
    else:
        raise UnsupportedArchitectureError(
            f"Architecture {arch!r} has no adapter. Supported architectures: "
            f"{', '.join(supported_architectures())}. Add an entry to "
            "workbench/models/families.json to support another one."
        )
    config = hf_model.config
    n_heads = _cfg(config, "num_attention_heads", "n_head")
    d_model = _cfg(config, "hidden_size", "n_embd")
    n_kv = _cfg(config, "num_key_value_heads", default=n_heads)
    head_dim = _cfg(config, "head_dim", default=d_model // n_heads)
    parallel = fam["parallel_residual"]
    if isinstance(parallel, str):  # "config.<attr>": read from the config
        parallel = bool(getattr(config, parallel.split(".", 1)[1], False))
    softcap = _from_config(config, fam.get("final_softcap"))
    attn_softcap = _from_config(config, fam.get("attn_softcap"))
    adds_bos = table["_adds_bos"].get(arch, False)
    if tokenizer is not None:
        adds_bos = tokenizer_adds_bos(tokenizer)
    fields = {k: fam[k] for k in FamilyAdapter.__dataclass_fields__ if k in fam}
    fields.pop("parallel_residual", None)
    fields.pop("final_softcap", None)
    fields.pop("attn_softcap", None)
    return FamilyAdapter(
        architecture=arch,
        family=fam_name,
        parallel_residual=parallel,
        final_softcap=float(softcap) if softcap else None,
        attn_softcap=float(attn_softcap) if attn_softcap else None,
        n_layers=_cfg(config, "num_hidden_layers", "n_layer"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        d_model=d_model,
        vocab_size=config.vocab_size,
        max_context=_cfg(config, "max_position_embeddings", "n_positions"),
        adds_bos=adds_bos,
        **fields,
    )


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding a plain string puts the BOS token first (checked, not assumed)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a").input_ids
    return bool(ids) and ids[0] == bos
