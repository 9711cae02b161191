"""Plain-torch references, computed with HF forward hooks only (no nnsight)."""

from __future__ import annotations

import torch


def _get(root, path):
    for p in path.split("."):
        root = getattr(root, p)
    return root


def hf_layer(model, i):
    return _get(model.hf, model.adapter.layers)[i]


def reference_values(model, i, x_normed: torch.Tensor) -> torch.Tensor:
    """Value vectors [b, kv, s, hd] of layer ``i`` from its normalised input, per family."""
    a = model.adapter
    attn = _get(hf_layer(model, i), a.attn)
    b, s, _ = x_normed.shape
    if a.family == "gpt2":
        v = attn.c_attn(x_normed).split(a.d_model, dim=2)[2]
        return v.view(b, s, a.n_kv_heads, a.head_dim).transpose(1, 2)
    if a.family == "gpt_neox":
        qkv = attn.query_key_value(x_normed).view(b, s, a.n_heads, 3 * a.head_dim)
        return qkv[..., 2 * a.head_dim :].transpose(1, 2)
    if a.architecture == "Phi3ForCausalLM":
        qkv = attn.qkv_proj(x_normed)
        v = qkv[..., (a.n_heads + a.n_kv_heads) * a.head_dim :]
        return v.view(b, s, a.n_kv_heads, a.head_dim).transpose(1, 2)
    v = attn.v_proj(x_normed)
    return v.view(b, s, a.n_kv_heads, a.head_dim).transpose(1, 2)


def hooked_run(model, tokens, *, replace_attn_out=None, pre_hooks=None):
    """HF forward with hooks. Returns dict of per-layer captures and the logits.

    ``replace_attn_out``: {layer: fn(out_tensor) -> tensor} replacing the attention
    module's first output. ``pre_hooks``: {(path, layer): fn(module, args) -> args}.
    """
    a = model.adapter
    rec: dict = {"layer_in": {}, "layer_out": {}, "attn_in": {}, "attn_raw": {}, "o_in": {}}
    handles = []
    for i in range(a.n_layers):
        layer = hf_layer(model, i)
        attn = _get(layer, a.attn)
        o_proj = _get(attn, a.o_proj)

        def lin(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            rec["layer_in"][i] = x.detach().clone()

        def lout(mod, args, out, i=i):
            rec["layer_out"][i] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        def ain(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            rec["attn_in"][i] = x.detach().clone()

        def aout(mod, args, out, i=i):
            rec["attn_raw"][i] = out[0].detach().clone()
            if replace_attn_out and i in replace_attn_out:
                return (replace_attn_out[i](out[0]), *out[1:])
            return None

        def oin(mod, args, i=i):
            rec["o_in"][i] = args[0].detach().clone()

        handles += [
            layer.register_forward_pre_hook(lin, with_kwargs=True),
            layer.register_forward_hook(lout),
            attn.register_forward_pre_hook(ain, with_kwargs=True),
            attn.register_forward_hook(aout),
            o_proj.register_forward_pre_hook(oin),
        ]
    for (path, i), fn in (pre_hooks or {}).items():
        handles.append(_get(hf_layer(model, i), path).register_forward_pre_hook(fn))
    try:
        with torch.no_grad():
            out = model.hf(
                tokens.input_ids,
                attention_mask=tokens.attention_mask,
                output_attentions=True,
                output_hidden_states=True,
            )
    finally:
        for h in handles:
            h.remove()
    rec["logits"] = out.logits
    rec["attentions"] = out.attentions
    rec["hidden_states"] = out.hidden_states
    return rec


def zero_head_in_out_proj(hf, adapter, layer: int, head: int) -> None:
    """Zero head ``head``'s rows of layer ``layer``'s out-projection in a plain HF model, in
    place: the plain-torch way to zero that head's output."""
    o = _get(hf_layer_of(hf, adapter, layer), f"{adapter.attn}.{adapter.o_proj}")
    cols = slice(head * adapter.head_dim, (head + 1) * adapter.head_dim)
    with torch.no_grad():
        if isinstance(o, torch.nn.Linear):
            o.weight[:, cols] = 0
        else:  # GPT-2 Conv1D stores [in, out]
            o.weight[cols, :] = 0


def hf_layer_of(hf, adapter, i):
    return _get(hf, adapter.layers)[i]
