"""Head-ablation sweeps: the fast sweep equals the naive one, and both equal plain torch."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch

from tests.models import ARCHS, tiny, tiny_variant
from workbench.analysis.extreme_tokens import (
    EmptyDomainError,
    ExtremeTokenError,
    ablation_sweep,
    active_dormant,
    classify_heads,
    domain_contrast,
    naive_ablation_sweep,
)
from workbench.errors import HeadIndexError, LayerIndexError
from workbench.models.tiny import tiny_hf_model

PROMPTS = ["def f(x): return x", "The cat sat."]


def _loss(hf, tokens):
    """Mean next-token loss of a plain HF forward (soft-capped logits, as the model gives)."""
    with torch.no_grad():
        logits = hf(tokens.input_ids, attention_mask=tokens.attention_mask).logits.double()
    lp = torch.log_softmax(logits[:, :-1], -1)
    nll = -lp.gather(-1, tokens.input_ids[:, 1:, None]).squeeze(-1)
    valid = (tokens.attention_mask[:, 1:] * tokens.attention_mask[:, :-1]).bool()
    return float(nll[valid].mean())


def _get(root, path):
    for p in path.split("."):
        root = getattr(root, p)
    return root


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_sweep_equals_naive_sweep(arch):
    model = tiny(arch)
    fast = ablation_sweep(model, PROMPTS, batch_size=2, max_length=12)
    naive = naive_ablation_sweep(model, PROMPTS, batch_size=2, max_length=12)
    assert len(fast) == model.n_layers * model.n_heads * 2
    keys = ["layer", "head", "mode"]
    merged = fast.merge(naive, on=keys, suffixes=("_fast", "_naive"))
    assert len(merged) == len(fast)
    diff = (merged["delta_loss_fast"] - merged["delta_loss_naive"]).abs().max()
    assert diff < 1e-5, merged
    assert merged["delta_loss_naive"].abs().max() > 1e-4  # the ablations do something


def test_fast_sweep_pools_batches_like_naive():
    model = tiny("GPT2LMHeadModel")
    prompts = [*PROMPTS, "x = [1, 2, 3]"]
    fast = ablation_sweep(model, prompts, batch_size=2, layers=[1], copies_per_pass=3)
    naive = naive_ablation_sweep(model, prompts, batch_size=2, layers=[1])
    torch.testing.assert_close(
        torch.tensor(fast["delta_loss"].to_numpy()),
        torch.tensor(naive["delta_loss"].to_numpy()),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "Gemma2ForCausalLM"])
def test_zero_ablation_equals_zeroed_out_projection(arch):
    """Plain torch: zeroing head h's rows of W_O is the same as zeroing its output."""
    model = tiny(arch)
    layer, head = 1, 2
    tokens = model.tokenize(PROMPTS)
    table = ablation_sweep(model, PROMPTS, layers=[layer], modes=["zero"])
    hf, _ = tiny_hf_model(arch)
    a = model.adapter
    clean = _loss(hf, tokens)
    o = _get(_get(hf, a.layers)[layer], f"{a.attn}.{a.o_proj}")
    cols = slice(head * a.head_dim, (head + 1) * a.head_dim)
    with torch.no_grad():
        if isinstance(o, torch.nn.Linear):
            o.weight[:, cols] = 0
        else:  # GPT-2 Conv1D: [in, out]
            o.weight[cols, :] = 0
    ablated = _loss(hf, tokens)
    row = table[(table["head"] == head)].iloc[0]
    assert row["clean_loss"] == pytest.approx(clean, abs=1e-5)
    assert row["loss"] == pytest.approx(ablated, abs=1e-5)


def test_sink_ablation_equals_one_hot_attention_on_the_sink():
    """Plain torch: rewrite head h's attention to a one-hot on the sink inside eager attention."""
    arch = "LlamaForCausalLM"
    model = tiny(arch)
    layer, head = 2, 1
    tokens = model.tokenize(PROMPTS)
    table = ablation_sweep(model, PROMPTS, layers=[layer], modes=["sink"])
    hf, _ = tiny_hf_model(arch)
    mod = sys.modules[type(hf.model.layers[0].self_attn).__module__]
    orig = mod.eager_attention_forward
    calls = []

    def one_hot(module, query, key, value, attention_mask, **kw):
        out, w = orig(module, query, key, value, attention_mask, **kw)
        if len(calls) == layer:
            out = out.clone()  # [b, s, heads, d_head]
            out[:, :, head] = value[:, head // model.adapter.kv_group, 0][:, None, :]
        calls.append(1)
        return out, w

    mod.eager_attention_forward = one_hot
    try:
        ablated = _loss(hf, tokens)
    finally:
        mod.eager_attention_forward = orig
    row = table[table["head"] == head].iloc[0]
    assert row["loss"] == pytest.approx(ablated, abs=1e-5)


def test_fast_sweep_never_reruns_earlier_layers_and_batches_heads():
    model = tiny("LlamaForCausalLM")
    layers = model.hf.model.layers
    counts = [0] * model.n_layers
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: counts.__setitem__(i, counts[i] + 1))
        for i, layer in enumerate(layers)
    ]
    try:
        ablation_sweep(model, PROMPTS, batch_size=2, layers=[2])
    finally:
        for h in handles:
            h.remove()
    # one clean pass; then one batched pass (all 4 heads x 2 modes) over layer 2 only
    assert counts == [1, 1, 2]


# -- errors ----------------------------------------------------------------------------------
def test_empty_domain_corpus_is_a_clear_error():
    model = tiny("LlamaForCausalLM")
    with pytest.raises(EmptyDomainError, match="'code' domain corpus is empty"):
        active_dormant(model, {"code": [], "prose": PROMPTS})
    with pytest.raises(EmptyDomainError, match="corpus is empty"):
        ablation_sweep(model, [])
    with pytest.raises(EmptyDomainError, match="No domains"):
        active_dormant(model, {})


def test_unknown_head_layer_and_mode_are_clear_errors():
    model = tiny("LlamaForCausalLM")
    with pytest.raises(HeadIndexError, match=r"Head 7 is out of range.*valid: 0\.\.3"):
        ablation_sweep(model, PROMPTS, heads=[7])
    with pytest.raises(HeadIndexError):
        naive_ablation_sweep(model, PROMPTS, heads=[-1])
    with pytest.raises(LayerIndexError, match="Layer 9 is out of range"):
        ablation_sweep(model, PROMPTS, layers=[9])
    with pytest.raises(ExtremeTokenError, match="Unknown ablation modes"):
        ablation_sweep(model, PROMPTS, modes=["mean"])


def test_sink_ablation_needs_one_sink_position_per_batch():
    model = tiny("LlamaForCausalLM")
    prompts = ["ab. cd", "abcd. e"]
    with pytest.raises(ExtremeTokenError, match="batch_size=1"):
        ablation_sweep(model, prompts, sink="first_period", layers=[0])
    one = ablation_sweep(model, prompts, sink="first_period", layers=[0], batch_size=1)
    ref = naive_ablation_sweep(model, prompts, sink="first_period", layers=[0], batch_size=1)
    assert (one["delta_loss"] - ref["delta_loss"]).abs().max() < 1e-5


# -- active / dormant ------------------------------------------------------------------------
def test_active_dormant_table_and_domain_contrast():
    model = tiny("Qwen3ForCausalLM")
    ad = active_dormant(
        model, {"code": ["def f(x): return x"], "prose": ["The cat sat on the mat."]}
    )
    t = ad.table
    assert len(t) == 2 * model.n_layers * model.n_heads
    # one document per domain: no spread can be measured, so no state is given
    assert set(t["state"]) == {"uncertain"}
    assert "Only 1 document" in ad.sample_warning()
    assert {"sink_mass", "delta_zero", "delta_sink"} <= set(t.columns)
    assert ad.pivot("sink_mass").shape == (model.n_layers * model.n_heads, 2)
    top = ad.most_domain_specific(3)
    assert len(top) == 3
    assert top["specificity"].is_monotonic_decreasing
    ad_only = ad.most_domain_specific(100, active_dormant_only=True)
    assert (ad_only["dormant_in"] != "").all()
    expect = ad_only.iloc[0] if len(ad_only) else top.iloc[0]
    assert ad.showcase_head() == (int(expect["layer"]), int(expect["head"]))
    code = ad.scans["code"].heads.set_index(["layer", "head"])["sink_mass"]
    row = top.iloc[0]
    assert row["sink_mass_code"] == pytest.approx(code[(row["layer"], row["head"])])


def test_classify_and_contrast_on_a_hand_made_table():
    t = pd.DataFrame(
        {
            "domain": ["code", "code", "prose", "prose"],
            "layer": [0, 0, 0, 0],
            "head": [0, 1, 0, 1],
            "sink_mass": [0.9, 0.1, 0.2, 0.1],
            "delta_zero": [0.001, 0.002, 0.3, 0.002],
            "delta_sink": [0.0, 0.0, 0.2, 0.0],
        }
    )
    t["state"] = classify_heads(t, sink_threshold=0.5, effect_threshold=0.01)
    assert t["state"].tolist() == ["dormant", "quiet", "active", "quiet"]
    c = domain_contrast(t)
    first = c.iloc[0]
    # head 0: |0.9 - 0.2| + min(1, |0.001 - 0.3| / q95); q95 of |delta_zero| is
    # 0.002 + 0.85 * (0.3 - 0.002) = 0.2553, so the effect term is clipped to 1
    assert (first["layer"], first["head"]) == (0, 0)
    assert first["specificity"] == pytest.approx(0.7 + 1.0)
    assert c.iloc[1]["specificity"] == pytest.approx(0.0)
    assert bool(first["switches"]) and not bool(c.iloc[1]["switches"])
    assert c["dormant_in"].tolist() == ["code", ""]


def test_losses_use_soft_capped_logits_like_hf():
    """Gemma-2 soft-caps its logits after the unembedding; every loss here must too."""
    model, hf = tiny_variant("Gemma2ForCausalLM", final_logit_softcapping=0.5)
    tokens = model.tokenize(PROMPTS)
    fast = ablation_sweep(model, PROMPTS, layers=[1], heads=[0], modes=["zero"])
    naive = naive_ablation_sweep(model, PROMPTS, layers=[1], heads=[0], modes=["zero"])
    clean = _loss(hf, tokens)
    assert fast["clean_loss"].iloc[0] == pytest.approx(clean, abs=1e-5)
    assert naive["clean_loss"].iloc[0] == pytest.approx(clean, abs=1e-5)
    assert fast["loss"].iloc[0] == pytest.approx(naive["loss"].iloc[0], abs=1e-5)
