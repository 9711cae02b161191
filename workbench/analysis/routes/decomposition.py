"""Exact decomposition of each block's update, read from one captured forward pass.

**Attention.** For target token ``i`` at layer ``ℓ`` the attention block adds

    attn_out_i = s_i · g ⊙ ( Σ_h Σ_{j≤i} A^h_ij · (v_j^{h} W_O^h) + b_O )

- ``A^h`` are head ``h``'s attention probabilities and ``v_j^h`` the value vector of the
  key/value head it reads, ``h // kv_group`` (grouped-query attention);
- ``W_O^h`` are the ``head_dim`` rows of the out-projection that head ``h`` feeds
  (GPT-2's ``Conv1D`` stores the weight as [in, out], ``nn.Linear`` as [out, in]);
- ``b_O`` is the out-projection's bias (zero if it has none);
- ``s_i · g`` is the identity unless the model normalises the attention output (the
  ``post_attention_layernorm`` of Gemma-2/3 and OLMo-2).

So the parts of the whole ``y_i = x_i + attn_out_i`` are the residual ``x_i`` and
``z^h_{i←j} = s_i · A^h_ij · (v_j^h W_O^h ⊙ g)``, with ``s_i · g ⊙ b_O`` left over.

**Normalised attention output.** RMSNorm is not linear:
``RMSNorm(o) = o · rsqrt(mean(o²) + ε) ⊙ g`` (Gemma writes ``g = 1 + w``). For one token it
*is* a scalar ``s_i = rsqrt(mean(o_i²) + ε)`` times the fixed gain ``g``, so scaling every
part of token ``i`` by the same ``s_i · g`` keeps the decomposition exact: the parts sum
to the block's real output. The scalar depends on all the parts together, so a part's
contribution is "its share of the normalised sum", which is what the block adds. We read
``g`` by running the norm (in float32) on a constant vector, and ``s_i`` by least squares
from the captured output (``s_i = <attn_out_i, g⊙o_i> / ‖g⊙o_i‖²``), which equals the
RMS formula for an RMSNorm, and then *check* that ``s_i · g ⊙ o_i`` reproduces
``attn_out_i``. A norm of any other form (LayerNorm's centring, a non-linearity) fails the
check with :class:`UndecomposableAttentionError` instead of giving wrong numbers.

**MLP.** The whole is ``x_{ℓ+1,i} = y_i + mlp_out_i`` with the parts ``y_i`` (residual) and
``mlp_out_i``; optionally the parts are single neurons ``a_k · W_out[k]`` (scaled like
the attention parts when the model normalises the MLP output), with the bias left over.

**Parallel residual (GPT-NeoX / Pythia).** ``x_{ℓ+1} = x_ℓ + attn(x_ℓ) + mlp(x_ℓ)``. The
wholes stay ``y = x_ℓ + attn_out`` and ``x_{ℓ+1} = y + mlp_out``, which is exact; only the
MLP's input differs: it reads ``x_ℓ``, not ``y`` (see :meth:`ForwardPass.mlp_input`).

Everything is computed in float32, whatever the model's dtype.

Example:
    >>> fp = forward_pass(model, "The capital of France is")
    >>> parts = attention_parts(fp, layer=3, queries=[4])
    >>> parts.total().sub(parts.whole).abs().max()     # the parts sum to the whole
    tensor(...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from workbench.analysis.routes.errors import UndecomposableAttentionError
from workbench.analysis.routes.threads import cpu_threads
from workbench.models.model import Prompts, Tokens, WorkbenchModel
from workbench.tracing.capture import Capture, capture, tokens_for
from workbench.tracing.provenance import Provenance

__all__ = [
    "CAPTURED",
    "AttentionParts",
    "ForwardPass",
    "HeadWeights",
    "MlpParts",
    "NeuronParts",
    "attention_parts",
    "exactness",
    "forward_pass",
    "head_weights",
    "mlp_parts",
    "neuron_parts",
]

# What one forward pass must capture for the decomposition.
CAPTURED = ("resid_pre", "values", "attn_probs", "head_out", "attn_out", "mlp_out")

# A constant probe vector this large makes the norm's ε negligible (relative 1e-12).
_PROBE = 1e3


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    den = want.float().norm().clamp_min(1e-30)
    return float((got.float() - want.float()).norm() / den)


# -- weights ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadWeights:
    """The out-projection of one layer, split per head, in float32.

    Attributes:
        w_o: [heads, head_dim, d_model]: head ``h`` adds ``head_out_h @ w_o[h]``.
        bias: [d_model] or ``None``: the out-projection's bias ``b_O``.
        post_gain: [d_model] or ``None``: the gain ``g`` of a norm on the attention output.
        mlp_post_gain: [d_model] or ``None``: the same for a norm on the MLP output.
    """

    w_o: torch.Tensor
    bias: torch.Tensor | None
    post_gain: torch.Tensor | None
    mlp_post_gain: torch.Tensor | None = None


def _linear_in_out(module: torch.nn.Module, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [in, out], bias) of an ``nn.Linear`` or a GPT-2 ``Conv1D``, in float32."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        w = module.weight.detach()  # already [in, out]
    elif isinstance(module, torch.nn.Linear):
        w = module.weight.detach().T  # [out, in] -> [in, out]
    else:
        raise UndecomposableAttentionError(
            f"{what} is a {type(module).__name__}; the decomposition needs a linear map "
            "(torch.nn.Linear or transformers' Conv1D) to split the output per head. "
            "This model's attention cannot be decomposed into per-head, per-source parts."
        )
    if w.is_meta:
        raise UndecomposableAttentionError(
            f"The weights of {what} are not here (meta tensors: a remote or not yet loaded "
            "model). The decomposition needs the out-projection's weights; load the model "
            "locally (load_model(name) without remote=True)."
        )
    b = module.bias.detach().float() if getattr(module, "bias", None) is not None else None
    return w.float(), b


def _norm_gain(norm: torch.nn.Module, d_model: int) -> torch.Tensor:
    """The gain ``g`` of a norm of the form ``s(x) · g ⊙ x``, read by running it in float32."""
    params = {k: v.detach().float() for k, v in norm.named_parameters()}
    buffers = {k: v.float() if v.is_floating_point() else v for k, v in norm.named_buffers()}
    dev = next(iter(params.values())).device if params else torch.device("cpu")
    x = torch.full((1, d_model), _PROBE, dtype=torch.float32, device=dev)
    with torch.no_grad():
        out = torch.func.functional_call(norm, {**params, **buffers}, (x,))
    # out = _PROBE / sqrt(_PROBE² + ε) · g, i.e. g to within 1e-12 for any sane ε.
    return out.reshape(d_model).float()


def head_weights(model: WorkbenchModel, layer: int) -> HeadWeights:
    """Per-head out-projection of ``layer``, or :class:`UndecomposableAttentionError`.

    Example:
        >>> w = head_weights(model, 0)
        >>> w.w_o.shape                       # [heads, head_dim, d_model]
        torch.Size([9, 64, 576])
    """
    layer = model.check_layer(layer)
    a = model.adapter
    prefix = f"{a.layers}.{layer}"
    path = f"{prefix}.{a.attn}.{a.o_proj}"
    w, b = _linear_in_out(model.hf_module(path), path)
    want = (a.n_heads * a.head_dim, a.d_model)
    if tuple(w.shape) != want:
        raise UndecomposableAttentionError(
            f"{path} maps {w.shape[0]} inputs to {w.shape[1]} outputs; a split into "
            f"{a.n_heads} heads of {a.head_dim} needs {want[0]} -> {want[1]}. "
            "This model's attention cannot be decomposed per head."
        )

    def gain(norm_path: str | None) -> torch.Tensor | None:
        return (
            _norm_gain(model.hf_module(f"{prefix}.{norm_path}"), a.d_model) if norm_path else None
        )

    post, mlp_post = gain(a.post_attn_norm), gain(a.post_mlp_norm)
    return HeadWeights(w.reshape(a.n_heads, a.head_dim, a.d_model), b, post, mlp_post)


# -- the forward pass -----------------------------------------------------------------------


@dataclass
class ForwardPass:
    """One prompt's captured forward pass: everything the decomposition reads.

    Tensors keep the model's dtype and device; methods return float32. Only the real
    tokens of the prompt are kept (``seq`` = its length).

    Attributes:
        tokens: token strings; ``token_ids`` their ids.
        resid_pre: [L, seq, d_model] the residual entering each layer.
        attn_out, mlp_out: [L, seq, d_model] what each block adds (post-norms included).
        attn_probs: [L, heads, seq, seq].
        values: [L, kv_heads, seq, head_dim].
        head_out: [L, seq, heads, head_dim].
        weights: per layer, :class:`HeadWeights`.
        post_scale: [L, seq] float32, the per-token factor ``s_i`` (ones without a norm).
    """

    tokens: list[str]
    token_ids: list[int]
    resid_pre: torch.Tensor
    attn_out: torch.Tensor
    mlp_out: torch.Tensor
    attn_probs: torch.Tensor
    values: torch.Tensor
    head_out: torch.Tensor
    weights: list[HeadWeights]
    parallel_residual: bool = False
    provenance: Provenance | None = None
    post_scale: torch.Tensor = field(default=None)  # type: ignore[assignment]

    # -- geometry -----------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.resid_pre.shape[0]

    @property
    def seq_len(self) -> int:
        return self.resid_pre.shape[1]

    @property
    def d_model(self) -> int:
        return self.resid_pre.shape[2]

    @property
    def n_heads(self) -> int:
        return self.attn_probs.shape[1]

    @property
    def n_kv_heads(self) -> int:
        return self.values.shape[1]

    @property
    def kv_group(self) -> int:
        return self.n_heads // self.n_kv_heads

    # -- wholes (float32) -----------------------------------------------------------------------
    def attn_input(self, layer: int) -> torch.Tensor:
        """[seq, d_model] the residual entering ``layer`` (the attention block's residual part)."""
        return self.resid_pre[layer].float()

    def attn_whole(self, layer: int) -> torch.Tensor:
        """[seq, d_model] the residual after ``layer``'s attention block: ``x + attn_out``."""
        return self.resid_pre[layer].float() + self.attn_out[layer].float()

    def mlp_whole(self, layer: int) -> torch.Tensor:
        """[seq, d_model] the residual after ``layer``'s MLP block (the layer's output)."""
        return self.attn_whole(layer) + self.mlp_out[layer].float()

    def mlp_input(self, layer: int) -> torch.Tensor:
        """[seq, d_model] the residual the MLP reads: ``x`` with a parallel residual, else ``y``."""
        return self.attn_input(layer) if self.parallel_residual else self.attn_whole(layer)

    # -- parts -------------------------------------------------------------------------------
    def value_outputs(self, layer: int, heads: Sequence[int] | None = None) -> torch.Tensor:
        """[heads, seq, d_model] ``v_j^h W_O^h ⊙ g``: what source ``j`` sends through head ``h``.

        Multiply by ``s_i · A^h_ij`` (see :meth:`query_weights`) to get the part.
        """
        w = self.weights[layer]
        v = self.values[layer].float()  # [kv, seq, hd]
        if heads is None:
            kv = torch.arange(self.n_heads, device=v.device) // self.kv_group
            w_o = w.w_o.to(v.device)  # [h, hd, d]
        else:
            kv = torch.tensor([h // self.kv_group for h in heads], device=v.device)
            w_o = w.w_o[list(heads)].to(v.device)
        u = torch.bmm(v[kv], w_o)  # [h, seq, d]
        if w.post_gain is not None:
            u.mul_(w.post_gain.to(v.device))
        return u

    def query_weights(self, layer: int, queries: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """[heads, q, seq] ``s_i · A^h_ij`` for the query positions ``queries``."""
        probs = self.attn_probs[layer]
        q = torch.as_tensor(queries, device=probs.device, dtype=torch.long)
        a = probs[:, q].float()  # [h, q, seq]
        return a * self.post_scale[layer, q].to(a.device)[None, :, None]

    def bias_part(self, layer: int) -> torch.Tensor | None:
        """[seq, d_model] ``s_i · g ⊙ b_O``, the part no token owns (``None`` without bias)."""
        w = self.weights[layer]
        if w.bias is None:
            return None
        dev = self.resid_pre.device
        b = w.bias.to(dev) * (w.post_gain.to(dev) if w.post_gain is not None else 1.0)
        return self.post_scale[layer].to(dev)[:, None] * b[None, :]

    # -- exactness -----------------------------------------------------------------------------
    def _raw_attention(self, layer: int) -> torch.Tensor:
        """[seq, d_model] the out-projection's output before any norm: Σ_h head_out_h W_O^h + b."""
        w = self.weights[layer]
        h = self.head_out[layer].float()  # [seq, h, hd]
        dev = h.device
        raw = h.reshape(h.shape[0], -1) @ w.w_o.to(dev).reshape(-1, w.w_o.shape[-1])
        return raw + w.bias.to(dev) if w.bias is not None else raw

    def fit_post_scale(self, layer: int) -> torch.Tensor:
        """Set and return ``post_scale[layer]``: [seq] ``s_i`` (ones without a post-norm)."""
        w = self.weights[layer]
        raw = self._raw_attention(layer)
        if w.post_gain is None:
            scale = torch.ones(raw.shape[0], device=raw.device)
        else:
            gr = raw * w.post_gain.to(raw.device)
            out = self.attn_out[layer].float()
            scale = (out * gr).sum(-1) / (gr * gr).sum(-1).clamp_min(1e-30)
        self.post_scale[layer] = scale.to(self.post_scale.device)
        return scale

    def check_layer(self, layer: int, tol: float) -> None:
        """Check the decomposition of ``layer`` is exact (after :meth:`fit_post_scale`).

        Raises :class:`UndecomposableAttentionError` naming the check that failed.
        """
        probs = self.attn_probs[layer].float()  # [h, s, s]
        v = self.values[layer].float()  # [kv, s, hd]
        kv = torch.arange(self.n_heads, device=v.device) // self.kv_group
        mixed = torch.bmm(probs, v[kv])  # [h, s, hd]
        err = _rel_err(mixed.transpose(0, 1), self.head_out[layer])
        if err > tol:
            raise UndecomposableAttentionError(
                f"Layer {layer}: the heads' outputs are not their attention-weighted sums of "
                f"value vectors (relative error {err:.2e} > {tol:.0e}; head h was assumed to "
                f"read key/value head h // {self.kv_group}). The attention applies something "
                "after the probabilities (a gate, a learned sink...), so it cannot be split "
                "into per-source parts."
            )
        w = self.weights[layer]
        raw = self._raw_attention(layer)
        if w.post_gain is not None:
            raw = raw * w.post_gain.to(raw.device)
        recon = self.post_scale[layer].to(raw.device)[:, None] * raw
        err = _rel_err(recon, self.attn_out[layer])
        if err > tol:
            what = (
                "the out-projection of the heads' outputs"
                if w.post_gain is None
                else "a per-token scale times a fixed gain of the out-projection's output"
            )
            raise UndecomposableAttentionError(
                f"Layer {layer}: the attention block's output is not {what} (relative error "
                f"{err:.2e} > {tol:.0e}). Something non-linear sits between the heads and the "
                "residual stream, so the parts would not sum to the block output."
            )

    def mlp_scale(self, layer: int, position: int, raw_mlp: torch.Tensor) -> torch.Tensor:
        """The per-token factor ``s_i`` of a norm on the MLP output at ``position`` (1 without).

        ``raw_mlp`` [d_model] is the MLP's output before that norm.
        """
        w = self.weights[layer]
        if w.mlp_post_gain is None:
            return torch.ones((), device=raw_mlp.device)
        gr = raw_mlp * w.mlp_post_gain.to(raw_mlp.device)
        out = self.mlp_out[layer, position].float().to(raw_mlp.device)
        return (out * gr).sum(-1) / (gr * gr).sum(-1).clamp_min(1e-30)


def _slice(t: torch.Tensor, b: int, n: int, seq_dims: Sequence[int]) -> torch.Tensor:
    """``t[:, b]`` with every dimension in ``seq_dims`` (of the result) cut to ``n``."""
    out = t[:, b]
    for d in seq_dims:
        out = out.narrow(d, 0, n)
    return out


def forward_pass_from_capture(
    model: WorkbenchModel,
    cap: Capture,
    prompt: int = 0,
    *,
    weights: list[HeadWeights] | None = None,
    check: bool = True,
    tol: float | None = None,
) -> ForwardPass:
    """The :class:`ForwardPass` of prompt ``prompt`` of a capture of :data:`CAPTURED`.

    ``weights`` may be passed to reuse them across captures (data-set runs).
    With ``check`` every layer is checked to be exactly decomposable.
    """
    missing = [w for w in CAPTURED if w not in cap.tensors]
    if missing:
        raise UndecomposableAttentionError(
            f"The capture lacks {missing}; capture what=workbench.analysis.routes.CAPTURED."
        )
    if cap.layers != list(range(model.n_layers)):
        raise UndecomposableAttentionError(
            f"Routes need every layer captured; this capture has layers {cap.layers}."
        )
    n = cap.tokens.lengths[prompt]
    weights = weights if weights is not None else [head_weights(model, i) for i in cap.layers]
    fp = ForwardPass(
        tokens=list(cap.tokens.strings[prompt]),
        token_ids=cap.tokens.to_list()[prompt],
        resid_pre=_slice(cap.resid_pre, prompt, n, [1]),
        attn_out=_slice(cap.attn_out, prompt, n, [1]),
        mlp_out=_slice(cap.mlp_out, prompt, n, [1]),
        attn_probs=_slice(cap.attn_probs, prompt, n, [2, 3]),
        values=_slice(cap.values, prompt, n, [2]),
        head_out=_slice(cap.head_out, prompt, n, [1]),
        weights=weights,
        parallel_residual=model.adapter.parallel_residual,
        provenance=cap.provenance,
    )
    dev = fp.resid_pre.device
    fp.post_scale = torch.ones(fp.n_layers, n, device=dev)
    tol = _tolerance(model.dtype) if tol is None else tol
    with cpu_threads(dev):  # many small operations: see routes.threads
        for layer in range(fp.n_layers):
            fp.fit_post_scale(layer)
            if check:
                fp.check_layer(layer, tol)
    return fp


def forward_pass(
    model: WorkbenchModel,
    prompt: Prompts | Tokens,
    *,
    check: bool = True,
    tol: float | None = None,
) -> ForwardPass:
    """Run ``prompt`` (one prompt) once and keep what the decomposition needs.

    Example:
        >>> fp = forward_pass(model, "The capital of France is")
        >>> fp.attn_probs.shape          # [layers, heads, seq, seq]
        torch.Size([30, 9, 5, 5])
    """
    weights = [head_weights(model, i) for i in range(model.n_layers)]  # fail before running
    tokens = tokens_for(model, prompt)
    cap = capture(model, tokens, CAPTURED)
    return forward_pass_from_capture(model, cap, 0, weights=weights, check=check, tol=tol)


# -- materialised parts (tests, small prompts, inspection) ---------------------------------


@dataclass
class AttentionParts:
    """The attention block's parts for some query positions, materialised.

    Attributes:
        queries: the query positions, one row each.
        heads: [q, heads, seq, d_model] ``z^h_{i←j}`` (zero for ``j > i``).
        residual: [q, d_model] ``x_i``.
        bias: [q, d_model] ``s_i · g ⊙ b_O`` (zeros without bias).
        whole: [q, d_model] ``y_i`` as captured.
    """

    queries: list[int]
    heads: torch.Tensor
    residual: torch.Tensor
    bias: torch.Tensor
    whole: torch.Tensor

    def total(self) -> torch.Tensor:
        """[q, d_model] the sum of every part and the bias (equals ``whole``)."""
        return self.residual + self.heads.sum(dim=(1, 2)) + self.bias


def _queries(fp: ForwardPass, queries: Sequence[int] | None) -> list[int]:
    from workbench.analysis.routes.errors import PredictionIndexError

    if queries is None:
        return list(range(fp.seq_len))
    out = []
    for q in queries:
        p = int(q)
        p = p + fp.seq_len if p < 0 else p
        if not 0 <= p < fp.seq_len:
            raise PredictionIndexError(
                f"Position {q} is outside the prompt of {fp.seq_len} tokens "
                f"(valid: 0..{fp.seq_len - 1}, or negative from the end)."
            )
        out.append(p)
    return out


def attention_parts(
    fp: ForwardPass, layer: int, queries: Sequence[int] | None = None
) -> AttentionParts:
    """Materialise the parts of ``layer``'s attention block at ``queries`` (default: all).

    Memory is ``q × heads × seq × d_model`` floats: for inspection and tests, not for long
    prompts (the importances never need this; see :mod:`.importance`).
    """
    qs = _queries(fp, queries)
    u = fp.value_outputs(layer)  # [h, s, d]
    a = fp.query_weights(layer, qs)  # [h, q, s]
    heads = torch.einsum("hqk,hkd->qhkd", a, u)
    bias = fp.bias_part(layer)
    q = torch.as_tensor(qs, device=u.device)
    return AttentionParts(
        queries=qs,
        heads=heads,
        residual=fp.attn_input(layer)[q],
        bias=bias[q].float() if bias is not None else torch.zeros_like(heads[:, 0, 0]),
        whole=fp.attn_whole(layer)[q],
    )


def exactness(fp: ForwardPass) -> pd.DataFrame:
    """Per layer, how exactly the parts sum to each block's output (relative L2 errors).

    ``attention``: Σ_h Σ_j z^h_{i←j} + s_i·g⊙b_O against the captured attention output
    (summed per head with one matmul, never materialising the parts); ``layer``:
    residual + attention + MLP against the captured next layer input.
    """
    rows = []
    for layer in range(fp.n_layers):
        u = fp.value_outputs(layer)  # [h, s, d]
        a = fp.query_weights(layer, range(fp.seq_len)).to(u.device)  # [h, s, s]
        total = torch.bmm(a, u).sum(0)  # [s, d]
        bias = fp.bias_part(layer)
        if bias is not None:
            total = total + bias.to(total.device)
        row = {"layer": layer, "attention": _rel_err(total, fp.attn_out[layer])}
        if layer + 1 < fp.n_layers:
            row["layer_output"] = _rel_err(fp.mlp_whole(layer), fp.resid_pre[layer + 1])
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class MlpParts:
    """The MLP block's parts at every position: ``whole = residual + mlp`` exactly."""

    mlp: torch.Tensor  # [seq, d_model]
    residual: torch.Tensor  # [seq, d_model]
    whole: torch.Tensor  # [seq, d_model]


def mlp_parts(fp: ForwardPass, layer: int) -> MlpParts:
    """The MLP block of ``layer`` split into its output and the residual."""
    return MlpParts(fp.mlp_out[layer].float(), fp.attn_whole(layer), fp.mlp_whole(layer))


@dataclass
class NeuronParts:
    """The MLP block at one position split into single neurons.

    Attributes:
        neurons: [d_mlp, d_model] ``a_k · W_out[k]`` (times ``s_i · g`` under a post-norm).
        residual: [d_model]; bias: [d_model] (the out-projection's bias, scaled likewise);
        whole: [d_model] the layer's output at that position.
    """

    layer: int
    position: int
    neurons: torch.Tensor
    residual: torch.Tensor
    bias: torch.Tensor
    whole: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.residual + self.neurons.sum(0) + self.bias


def neuron_parts(
    model: WorkbenchModel,
    fp: ForwardPass,
    layer: int,
    position: int,
    *,
    tol: float | None = None,
) -> NeuronParts:
    """Split ``layer``'s MLP output at ``position`` into single neurons.

    The MLP's hidden activations are not part of the route capture, so this runs one
    more forward pass over ``fp``'s tokens (an nnsight trace reading the input of the MLP's
    out-projection).
    """
    layer = model.check_layer(layer)
    (pos,) = _queries(fp, [position])
    a = model.adapter
    path = f"{a.layers}.{layer}.{a.mlp}.{a.mlp_out_proj}"
    w, b = _linear_in_out(model.hf_module(path), path)  # [d_mlp, d]
    ids = torch.tensor([fp.token_ids], device=model.device)
    tokens = Tokens(ids, torch.ones_like(ids), [fp.tokens])
    hidden = capture(model, tokens, ["mlp_hidden"], layers=[layer], provenance=False).mlp_hidden
    act = hidden[0, 0, pos].float()  # [d_mlp]
    w = w.to(act.device)
    neurons = act[:, None] * w  # [d_mlp, d]
    bias = b.to(act.device) if b is not None else torch.zeros(w.shape[1], device=act.device)
    raw = neurons.sum(0) + bias
    scale = fp.mlp_scale(layer, pos, raw)
    gain = fp.weights[layer].mlp_post_gain
    if gain is not None:
        g = gain.to(act.device) * scale
        neurons, bias = neurons * g, bias * g
    parts = NeuronParts(
        layer,
        pos,
        neurons,
        fp.attn_whole(layer)[pos].to(act.device),
        bias,
        fp.mlp_whole(layer)[pos].to(act.device),
    )
    err = _rel_err(neurons.sum(0) + bias, fp.mlp_out[layer, pos].to(act.device))
    limit = _tolerance(model.dtype) if tol is None else tol
    if err > limit:
        raise UndecomposableAttentionError(
            f"Layer {layer}: the MLP output at position {pos} is not the sum of its neurons' "
            f"rows of {path} (relative error {err:.2e} > {limit:.0e})."
        )
    return parts
