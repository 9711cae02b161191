"""Interventions, each scoped to one trace.

An intervention names a *site* inside one layer and edits the value that flows through
it. Sites, in forward order within a layer:

=============  =========================================  =======================
site           value                                      shape
=============  =========================================  =======================
resid_pre      the layer's input residual stream          [batch, seq, d_model]
attn_inputs    (args, kwargs) of the attention function   mask: [batch, 1|h, q, k]
head_out       per-head output before the out-projection  [batch, seq, heads, d_head]
attn_out       the attention block's output (raw)         [batch, seq, d_model]
mlp_hidden     the MLP's hidden activations               [batch, seq, d_mlp]
mlp_out        the MLP block's output (raw)               [batch, seq, d_model]
resid_post     the layer's output residual stream         [batch, seq, d_model]
=============  =========================================  =======================

Edits are out-of-place and live only inside the trace that applies them: the next
plain forward pass computes exactly what it computed before.

Positions may be negative; they count back from each prompt's last *real* token, so
``positions=[-1]`` means "the last token" in a right-padded batch. An
:class:`ActivationPatch` resolves them in each run separately: ``-1`` is the source
run's last token *and* the target run's last token, whatever their lengths.

Interventions are values: binding one to a model and a batch (done by ``capture``)
returns a validated copy, and the object you built is never changed, so it can be
reused on another model or prompt.

Example:
    >>> from workbench.tracing import HeadAblation, run_with
    >>> logits = run_with(model, "The capital of France is",
    ...                   [HeadAblation(layer=3, heads=[0, 1], mode="zero")])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from workbench.errors import InterventionError

__all__ = [
    "SITES",
    "Intervention",
    "HeadAblation",
    "AttentionKnockout",
    "ActivationPatch",
    "Steering",
    "NeuronClamp",
    "BlockAblation",
]

SITES = (
    "resid_pre",
    "attn_inputs",
    "head_out",
    "attn_out",
    "mlp_hidden",
    "mlp_out",
    "resid_post",
)


def _resolve_positions(positions: list[int] | None, lengths: list[int]) -> list[list[int]]:
    """Per prompt, the absolute positions to edit; negatives count from each prompt's end."""
    out = []
    for n in lengths:
        if positions is None:
            out.append(list(range(n)))
            continue
        row = []
        for p in positions:
            q = p if p >= 0 else n + p
            if not 0 <= q < n:
                raise InterventionError(
                    f"Position {p} is outside a prompt of {n} tokens (valid: {-n}..{n - 1})."
                )
            row.append(q)
        out.append(row)
    return out


def _head_list(model: Any, heads: Any, who: str) -> list[int]:
    """``heads`` as checked head indices; an int or a string is a mistake worth naming."""
    if isinstance(heads, int | str) or not hasattr(heads, "__iter__"):
        raise InterventionError(
            f"{who}: heads must be a list of head indices, e.g. heads=[{heads!r}]; "
            f"got {type(heads).__name__} {heads!r}."
        )
    return [model.check_head(h) for h in heads]


def _check_finite(value: Any, what: str) -> None:
    """NaN or inf in an edit spreads silently through every later layer: refuse it."""
    if isinstance(value, torch.Tensor):
        if not torch.isfinite(value).all():
            raise InterventionError(
                f"{what} holds NaN or inf values; it would turn every later activation into "
                "NaN. Check how it was computed."
            )
    elif isinstance(value, int | float) and not math.isfinite(value):
        raise InterventionError(f"{what} is {value}; give a finite number.")


def _index(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    b = [i for i, r in enumerate(rows) for _ in r]
    p = [q for r in rows for q in r]
    return torch.tensor(b, device=device), torch.tensor(p, device=device)


@dataclass
class Intervention:
    """Base class. Subclasses set ``site`` and implement ``apply``."""

    site: ClassVar[str] = ""
    layer: int

    def bind(self, model: Any, tokens: Any) -> Intervention:
        """A copy validated against ``model`` with indices precomputed for ``tokens``.

        ``self`` is left exactly as it was (a negative layer stays negative).
        """
        bound = copy.copy(self)
        bound._bind(model, tokens)
        return bound

    def _bind(self, model: Any, tokens: Any) -> None:
        self.layer = model.check_layer(self.layer)

    def apply(self, value: Any, ctx: dict[str, Any]) -> Any:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-able description for provenance records."""
        d = {"type": type(self).__name__, "site": self.site}
        for k, v in vars(self).items():
            if k.startswith("_"):
                continue
            d[k] = list(v.shape) if isinstance(v, torch.Tensor) else v
        return d


@dataclass
class HeadAblation(Intervention):
    """Ablate query heads of one layer.

    Modes:
        ``"zero"``: the head's output is zero;
        ``"mean"``: the head's output is ``mean`` ([n_heads, d_head] or [len(heads), d_head]),
        typically its mean over a reference set (see :func:`head_means`);
        ``"sink"``: all of the head's attention moves to key ``sink`` (default 0), so its
        output is the sink's value vector. Queries before the sink are left alone.
    """

    site: ClassVar[str] = "head_out"
    heads: list[int] = field(default_factory=list)
    mode: str = "zero"
    mean: torch.Tensor | None = None
    sink: int = 0
    positions: list[int] | None = None

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        self.heads = _head_list(model, self.heads, "HeadAblation")
        if not self.heads:
            raise InterventionError(
                "HeadAblation got heads=[]: give at least one head index, e.g. heads=[0] "
                f"(valid: 0..{model.n_heads - 1})."
            )
        if self.mode not in ("zero", "mean", "sink"):
            raise InterventionError(
                f"Unknown ablation mode {self.mode!r}; choose 'zero', 'mean' or 'sink'."
            )
        if self.mode == "mean":
            if self.mean is None:
                raise InterventionError("Mean ablation needs `mean` (see head_means()).")
            if self.mean.shape[0] == model.n_heads and len(self.heads) != model.n_heads:
                self._mean = self.mean[self.heads]
            else:
                self._mean = self.mean
            if tuple(self._mean.shape) != (len(self.heads), model.head_dim):
                raise InterventionError(
                    f"`mean` must be [n_heads, d_head] = [{model.n_heads}, {model.head_dim}] or "
                    f"[len(heads), d_head]; got {list(self.mean.shape)}."
                )
        if self.mode == "sink":
            shortest = min(tokens.lengths)
            if not 0 <= self.sink < shortest:
                raise InterventionError(
                    f"Sink position {self.sink} is beyond the prompt (shortest has "
                    f"{shortest} tokens)."
                )
        self._kv = [h // model.adapter.kv_group for h in self.heads]
        self._rows = _resolve_positions(self.positions, tokens.lengths)
        if self.mode == "sink":  # a query cannot attend to a later key
            self._rows = [[q for q in r if q >= self.sink] for r in self._rows]

    @property
    def needs_values(self) -> bool:
        return self.mode == "sink"

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        # value: [batch, seq, heads, d_head]
        out = value.clone()
        b, p = _index(self._rows, value.device)
        heads = torch.tensor(self.heads, device=value.device)
        if self.mode == "zero":
            repl = torch.zeros(
                (len(b), len(self.heads), value.shape[-1]), dtype=value.dtype, device=value.device
            )
        elif self.mode == "mean":
            repl = self._mean.to(value)[None].expand(len(b), -1, -1)
        else:
            v = ctx["values"]  # [batch, kv_heads, seq, d_head]
            kv = torch.tensor(self._kv, device=value.device)
            repl = v[:, kv, self.sink, :][b]  # [n_edits, len(heads), d_head]
        out[b[:, None], p[:, None], heads[None, :]] = repl.to(value.dtype)
        return out


@dataclass
class AttentionKnockout(Intervention):
    """Block query→key edges before the softmax (the remaining keys renormalise).

    ``edges`` are (query, key) pairs; ``heads=None`` blocks them in every head.
    """

    site: ClassVar[str] = "attn_inputs"
    edges: list[tuple[int, int]] = field(default_factory=list)
    heads: list[int] | None = None

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if not self.edges:
            raise InterventionError("AttentionKnockout needs at least one (query, key) edge.")
        width = tokens.shape[1]
        for q, k in self.edges:
            if not (0 <= k <= q < width):
                raise InterventionError(
                    f"Edge ({q}, {k}) is not a causal edge inside the prompt: need "
                    f"0 <= key <= query < {width}."
                )
        blocked: dict[int, set[int]] = {}
        for q, k in self.edges:
            blocked.setdefault(q, set()).add(k)
        for q, ks in blocked.items():
            if len(ks) == q + 1:
                raise InterventionError(
                    f"Query {q} would have every key blocked; softmax needs at least one."
                )
        self.heads = (
            list(range(model.n_heads))
            if self.heads is None
            else _head_list(model, self.heads, "AttentionKnockout")
        )
        self._n_heads = model.n_heads

    def apply(self, value: tuple[tuple, dict], ctx: dict[str, Any]) -> tuple[tuple, dict]:
        args, kwargs = value
        mask = args[4] if len(args) > 4 else kwargs.get("attention_mask")
        q_states = args[1]  # [batch, heads, q, d_head]
        b, _, s, _ = q_states.shape
        if mask is None:
            mask = torch.zeros((b, 1, s, s), dtype=q_states.dtype, device=q_states.device)
            mask = mask.masked_fill(
                torch.ones((s, s), dtype=torch.bool, device=mask.device).triu(1),
                torch.finfo(q_states.dtype).min,
            )
        elif mask.dtype == torch.bool:  # True = may attend
            mask = torch.zeros(mask.shape, dtype=q_states.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(q_states.dtype).min
            )
        new = mask[..., :s, :].expand(b, self._n_heads, s, mask.shape[-1]).clone()
        qs = torch.tensor([e[0] for e in self.edges], device=new.device)
        ks = torch.tensor([e[1] for e in self.edges], device=new.device)
        heads = torch.tensor(self.heads, device=new.device)
        new[:, heads[:, None], qs[None, :], ks[None, :]] = torch.finfo(new.dtype).min
        if len(args) > 4:
            args = (*args[:4], new, *args[5:])
        else:
            kwargs = {**kwargs, "attention_mask": new}
        return args, kwargs


@dataclass
class ActivationPatch(Intervention):
    """Write activations from another run (usually a clean one) into this run.

    ``value`` has the site's shape for the *source* batch: ``[batch, seq, d_model]``, or
    ``[batch, seq, heads, d_head]`` for ``head_out``. It is written at ``positions`` (all
    by default); for ``head_out``, ``heads`` picks heads.

    Positions resolve in each run on its own: ``positions=[-1]`` takes the source's last
    token and writes it at the target's last token, even when the prompts differ in
    length. ``source_positions`` maps explicitly (``source_positions[k]`` is written at
    ``positions[k]``). ``source_lengths`` gives the real length of each source row (a
    padded source batch); by default a row's length is ``value.shape[1]``. Use
    :meth:`from_capture`, which fills it in.

    Example:
        >>> clean = capture(model, clean_prompt, what=["resid_post"], layers=[5])
        >>> patch = ActivationPatch.from_capture(clean, layer=5, site="resid_post",
        ...                                      positions=[-1])
    """

    site_name: str = "resid_post"
    value: torch.Tensor | None = None
    positions: list[int] | None = None
    heads: list[int] | None = None
    source_positions: list[int] | None = None
    source_lengths: list[int] | None = None

    PATCHABLE: ClassVar[tuple[str, ...]] = (
        "resid_pre",
        "head_out",
        "attn_out",
        "mlp_out",
        "resid_post",
    )

    @property
    def site(self) -> str:  # type: ignore[override]
        return self.site_name

    @classmethod
    def from_capture(
        cls,
        cap: Any,
        layer: int,
        site: str = "resid_post",
        *,
        positions: list[int] | None = None,
        source_positions: list[int] | None = None,
        heads: list[int] | None = None,
    ) -> ActivationPatch:
        """A patch of ``site`` at ``layer`` from a :class:`Capture` of the source run."""
        value = getattr(cap, site)[cap.layer_index(layer)]
        return cls(
            layer=layer,
            site_name=site,
            value=value,
            positions=positions,
            heads=heads,
            source_positions=source_positions,
            source_lengths=list(cap.tokens.lengths),
        )

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if self.site_name not in self.PATCHABLE:
            raise InterventionError(
                f"Cannot patch {self.site_name!r}; patchable sites: {self.PATCHABLE}."
            )
        if not isinstance(self.value, torch.Tensor):
            raise InterventionError(
                "ActivationPatch needs `value`, a tensor from the source run (e.g. "
                f"ActivationPatch.from_capture(clean, ...)); got {type(self.value).__name__}."
            )
        tail = (model.n_heads, model.head_dim) if self.site_name == "head_out" else (model.d_model,)
        want = "[batch, seq, " + ", ".join(map(str, tail)) + "]"
        if self.value.dim() != 2 + len(tail) or tuple(self.value.shape[2:]) != tail:
            raise InterventionError(
                f"Patch value for {self.site_name!r} must be {want} for {model.model_id}; "
                f"got {list(self.value.shape)}. Was it captured from another model or site?"
            )
        if self.value.shape[0] != tokens.shape[0]:
            raise InterventionError(
                f"Patch value has batch {self.value.shape[0]} but the run has {tokens.shape[0]}."
            )
        if self.heads is not None:
            self.heads = _head_list(model, self.heads, "ActivationPatch")
        src_len = (
            list(self.source_lengths)
            if self.source_lengths is not None
            else [int(self.value.shape[1])] * int(self.value.shape[0])
        )
        if len(src_len) != self.value.shape[0] or max(src_len) > self.value.shape[1]:
            raise InterventionError(
                f"source_lengths {src_len} do not fit a source value of shape "
                f"{list(self.value.shape)}."
            )
        tgt_len = tokens.lengths
        self._rows = _resolve_positions(self.positions, tgt_len)
        if self.source_positions is not None:
            if self.positions is None or len(self.source_positions) != len(self.positions):
                raise InterventionError(
                    "source_positions maps source to target one to one: give `positions` of "
                    f"the same length (got {self.source_positions} -> {self.positions})."
                )
            self._src_rows = _resolve_positions(self.source_positions, src_len)
        elif self.positions is None:
            if src_len != tgt_len:
                raise InterventionError(
                    f"Patching every position needs source and target of the same lengths; "
                    f"got source {src_len} and target {tgt_len} tokens. Give positions "
                    "(e.g. [-1]) and, if they differ between runs, source_positions."
                )
            self._src_rows = self._rows
        else:
            self._src_rows = _resolve_positions(self.positions, src_len)

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        out = value.clone()
        b, p = _index(self._rows, value.device)
        _, ps = _index(self._src_rows, value.device)
        src = self.value.to(value)
        if self.heads is None:
            out[b, p] = src[b, ps]
        else:
            h = torch.tensor(self.heads, device=value.device)
            out[b[:, None], p[:, None], h[None]] = src[b[:, None], ps[:, None], h[None]]
        return out

    def spec(self) -> dict[str, Any]:
        d = super().spec()
        d["site"] = self.site_name
        return d


@dataclass
class Steering(Intervention):
    """Add ``scale * vector`` ([d_model]) to the residual stream at ``positions``.

    ``at="resid_pre"`` adds it before layer ``layer``; ``"resid_post"`` after it.
    """

    vector: torch.Tensor | None = None
    positions: list[int] | None = None
    scale: float = 1.0
    at: str = "resid_pre"

    @property
    def site(self) -> str:  # type: ignore[override]
        return self.at

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if self.at not in ("resid_pre", "resid_post"):
            raise InterventionError(
                f"Steering `at` must be 'resid_pre' or 'resid_post', not {self.at!r}."
            )
        if not isinstance(self.vector, torch.Tensor) or tuple(self.vector.shape) != (
            model.d_model,
        ):
            got = (
                list(self.vector.shape)
                if isinstance(self.vector, torch.Tensor)
                else type(self.vector).__name__
            )
            raise InterventionError(
                f"Steering vector must be a tensor of shape [{model.d_model}], got {got}."
            )
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise InterventionError(f"Steering scale must be a number, got {self.scale!r}.")
        _check_finite(self.vector, "The steering vector")
        _check_finite(self.scale, "The steering scale")
        self._rows = _resolve_positions(self.positions, tokens.lengths)

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        out = value.clone()
        b, p = _index(self._rows, value.device)
        out[b, p] = out[b, p] + self.scale * self.vector.to(value)
        return out


@dataclass
class NeuronClamp(Intervention):
    """Set MLP neuron ``neuron`` (the input of the MLP's out-projection) to ``value``."""

    site: ClassVar[str] = "mlp_hidden"
    neuron: int = 0
    value: float = 0.0
    positions: list[int] | None = None

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        d_mlp = model.hf_module(
            f"{model.adapter.layers}.{self.layer}.{model.adapter.mlp}.{model.adapter.mlp_out_proj}"
        )
        width = getattr(d_mlp, "in_features", None) or d_mlp.weight.shape[0]
        if not 0 <= self.neuron < width:
            raise InterventionError(
                f"Neuron {self.neuron} is out of range: layer {self.layer}'s MLP has {width} "
                f"neurons (valid: 0..{width - 1})."
            )
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise InterventionError(f"Clamp value must be a number, got {self.value!r}.")
        _check_finite(self.value, "The clamp value")
        self._rows = _resolve_positions(self.positions, tokens.lengths)

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        out = value.clone()
        b, p = _index(self._rows, value.device)
        out[b, p, self.neuron] = self.value
        return out


@dataclass
class BlockAblation(Intervention):
    """Zero what one block adds to the residual stream, at every position.

    ``block="attn"`` zeroes the attention block's raw output, ``"mlp"`` the MLP's; a
    post-block RMSNorm (Gemma-2, OLMo-2) then also gives 0, so the block adds nothing.

    Example:
        >>> capture(model, docs, ["resid_post"], interventions=[BlockAblation(0, "mlp")])
    """

    block: str = "mlp"

    BLOCKS: ClassVar[tuple[str, ...]] = ("attn", "mlp")

    @property
    def site(self) -> str:  # type: ignore[override]
        return "attn_out" if self.block == "attn" else "mlp_out"

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if self.block not in self.BLOCKS:
            raise InterventionError(f"Unknown block {self.block!r}; choose from {self.BLOCKS}.")

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        return torch.zeros_like(value)
