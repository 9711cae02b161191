"""Sparse autoencoders over a residual stream: TopK, ReLU (+L1) and JumpReLU inference.

The parameters and the maths follow SAELens, so that a saved SAE loads there unchanged:

================  ================  ==================================================
parameter         shape             role
================  ================  ==================================================
``W_enc``         [d_in, d_sae]     encoder
``b_enc``         [d_sae]           encoder bias
``W_dec``         [d_sae, d_in]     decoder; row f is feature f's direction
``b_dec``         [d_in]            decoder bias (subtracted from the input first when
                                    ``apply_b_dec_to_input``)
``threshold``     [d_sae]           JumpReLU only (Gemma Scope)
================  ================  ==================================================

``pre = (x - b_dec·apply_b_dec_to_input) @ W_enc + b_enc`` and then

- ``"topk"``: keep the ``k`` largest entries of ``pre``, ReLU them, zero the rest;
- ``"standard"``: ``relu(pre)`` (trained with an L1 penalty);
- ``"jumprelu"``: ``relu(pre)`` where ``pre > threshold``, else 0.

``decode(f) = f @ W_dec + b_dec``.

Example:
    >>> sae = SAE(SAEConfig(d_in=576, d_sae=4096, architecture="topk", k=32))
    >>> f = sae.encode(torch.randn(10, 576))       # [10, 4096], 32 non-zeros per row
    >>> sae.decode(f).shape
    torch.Size([10, 576])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SAEConfigError", "hook_name_for"]

ARCHITECTURES = ("topk", "standard", "jumprelu")


class SAEConfigError(WorkbenchError, ValueError):
    """An SAE configuration that cannot describe a working SAE."""


def hook_name_for(layer: int, site: str = "resid_post") -> str:
    """The SAELens hook name of a workbench site, e.g. ``blocks.6.hook_resid_post``."""
    return f"blocks.{layer}.hook_{site}"


@dataclass
class SAEConfig:
    """Shape, architecture and provenance of an SAE (the fields SAELens reads, and ours).

    ``hook_layer`` and ``site`` say where in the model it reads: ``site`` is a workbench
    capture name (``resid_post`` = the output of layer ``hook_layer``).
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int | None = None
    hook_layer: int = 0
    site: str = "resid_post"
    model_name: str = ""
    dtype: str = "float32"
    device: str = "cpu"
    apply_b_dec_to_input: bool = True
    context_size: int | None = None
    dataset_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # training stats, kept in cfg.json

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise SAEConfigError(
                f"Unknown SAE architecture {self.architecture!r}; choose one of {ARCHITECTURES}."
            )
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SAEConfigError(f"d_in and d_sae must be positive; got {self.d_in}, {self.d_sae}.")
        if self.architecture == "topk":
            if self.k is None or not 0 < self.k <= self.d_sae:
                raise SAEConfigError(
                    f"A TopK SAE needs 0 < k <= d_sae = {self.d_sae}; got k = {self.k}."
                )

    @property
    def hook_name(self) -> str:
        return hook_name_for(self.hook_layer, self.site)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAE(nn.Module):
    """A sparse autoencoder with SAELens's parameter names and layout (see the module doc)."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        d_in, d_sae = cfg.d_in, cfg.d_sae
        w_dec = torch.randn(d_sae, d_in, dtype=dtype)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)  # [d_sae, d_in]
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae, dtype=dtype))

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        return f"SAE({c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}{k}, hook={c.hook_name!r})"

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    # -- encode ---------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec) @ W_enc + b_enc``: [..., d_in] -> [..., d_sae]."""
        if x.shape[-1] != self.cfg.d_in:
            raise SAEConfigError(
                f"This SAE reads vectors of d_in = {self.cfg.d_in} ({self.cfg.hook_name!r}), "
                f"but got [..., {x.shape[-1]}]: it was trained on another model or site. Use an "
                "SAE trained on this model's residual stream (d_model), or train one."
            )
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK only: (indices, values), each [..., k], in no set order; values are >= 0."""
        if self.cfg.architecture != "topk":
            raise SAEConfigError(
                f"encode_sparse needs a TopK SAE; this one is {self.cfg.architecture!r}. "
                "Use encode() and take the non-zeros."
            )
        top = self.pre_activations(x).topk(self.cfg.k, dim=-1, sorted=False)  # sorting costs 8%
        return top.indices, top.values.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of inputs [..., d_in]."""
        if self.cfg.architecture == "topk":
            idx, val = self.encode_sparse(x)
            out = torch.zeros(*x.shape[:-1], self.cfg.d_sae, dtype=val.dtype, device=val.device)
            return out.scatter_(-1, idx, val)
        pre = self.pre_activations(x)
        if self.cfg.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    # -- decode ---------------------------------------------------------------------------
    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_in] of feature activations [..., d_sae]."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode_sparse(self, idx: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        """Reconstruction [n, d_in] from TopK ``(indices, values)`` [n, k]; no dense [n, d_sae]."""
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=val, mode="sum") + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # -- helpers --------------------------------------------------------------------------
    def direction(self, feature: int) -> torch.Tensor:
        """Feature ``feature``'s unit-norm decoder direction [d_in] (a copy)."""
        if not 0 <= feature < self.cfg.d_sae:
            raise SAEConfigError(
                f"Feature {feature} is out of range: this SAE has {self.cfg.d_sae} features "
                f"(valid: 0..{self.cfg.d_sae - 1})."
            )
        w = self.W_dec[feature].detach().float()
        return w / w.norm().clamp_min(1e-12)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on ``x * scale`` read raw ``x`` (same features, outputs / scale).

        ``pre(x*s)`` with ``(W_enc, b_dec)`` equals ``pre(x)`` with ``(s·W_enc, b_dec/s)``, and
        the reconstruction of raw ``x`` is the scaled one divided by ``s``.
        """
        if not math.isfinite(scale) or scale <= 0:
            raise SAEConfigError(f"Input scale must be a positive number; got {scale}.")
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)
