"""Attribution patching against exact patching, DLA against the model's own logits, on every
tiny family; AtP*'s closed form against a brute-force softmax; errors and dtypes."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from tests.models import ARCHS, tiny, tiny_variant
from workbench.analysis import attribution as at

CLEAN, CORRUPT = "the cat sat on the mat", "the dog ran to the mat"


def _metric():
    return at.LogitDiff(5, 7)


@pytest.mark.parametrize("arch", ARCHS)
def test_atp_tracks_exact_patching_on_every_family(arch):
    model = tiny(arch)
    m = _metric()
    atp = at.attribution_patching(model, CLEAN, CORRUPT, m)
    exact = at.exact_patching(model, CLEAN, CORRUPT, m, per_position=True, progress=False)
    assert atp.metric_clean == pytest.approx(exact.metric_clean, abs=1e-5)
    assert atp.metric_corrupt == pytest.approx(exact.metric_corrupt, abs=1e-5)
    table = at.compare(atp, exact)
    # tiny random models are close to linear: AtP must track the real effects
    assert table.attrs["correlation"] > 0.95, table
    assert exact.forwards == model.n_layers * (model.n_heads + 1) * len(atp.positions)


def test_exact_patching_of_everything_restores_the_clean_metric():
    """Patching the last layer's every head and MLP at all positions is not the whole
    run, but patching resid_post of the last layer is: check the sweep's plumbing via a
    single-head, all-positions patch against a direct run_with."""
    model = tiny("LlamaForCausalLM")
    m = _metric()
    exact = at.exact_patching(model, CLEAN, CORRUPT, m, progress=False)
    clean = wb.tracing.site_values(model, CLEAN, ["head_out"])
    iv = wb.tracing.ActivationPatch(
        layer=1, site_name="head_out", value=clean.values[(1, "head_out")], heads=[2]
    )
    logits = wb.run_with(model, CORRUPT, [iv])
    assert float(exact.heads[1, 2]) == pytest.approx(
        float(m(logits)[0]) - exact.metric_corrupt, abs=1e-5
    )


def test_a_metric_that_ignores_a_component_gives_zero_not_nan():
    model = tiny("LlamaForCausalLM")
    # the logit difference at position 0 depends on nothing at later positions
    atp = at.attribution_patching(model, CLEAN, CORRUPT, at.LogitDiff(5, 7, position=0))
    assert torch.isfinite(atp.heads).all() and torch.isfinite(atp.mlps).all()
    assert atp.heads[:, 1:].abs().max() == 0 and atp.mlps[:, 1:].abs().max() == 0
    const = at.attribution_patching(
        model, CLEAN, CORRUPT, lambda logits: torch.ones(logits.shape[0])
    )
    assert const.heads.abs().max() == 0 and torch.isfinite(const.heads).all()


def test_prompts_of_different_lengths_need_a_position_map():
    model = tiny("LlamaForCausalLM")
    with pytest.raises(at.AttributionError, match="position_map"):
        at.attribution_patching(model, "the cat sat", "a dog ran to it", _metric())
    res = at.attribution_patching(
        model, "the cat sat", "a dog ran to it", _metric(), position_map={-1: -1, 0: 0}
    )
    n = len(res.tokens)
    assert res.positions == [n - 1, 0]
    assert res.heads[:, 1 : n - 1].abs().max() == 0  # unmapped positions are not patched
    exact = at.exact_patching(
        model,
        "the cat sat",
        "a dog ran to it",
        _metric(),
        position_map={-1: -1, 0: 0},
        progress=False,
    )
    assert at.compare(res, exact).attrs["correlation"] > 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_path_in_float32_and_bfloat16(dtype):
    model = wb.load_model("tiny:LlamaForCausalLM", dtype=dtype)
    assert model.dtype == dtype
    flags = [p.requires_grad for p in model.hf.parameters()]
    before = wb.run_with(model, CORRUPT).clone()
    res = at.attribution_patching(model, CLEAN, CORRUPT, _metric(), neurons=True)
    assert res.heads.dtype == torch.float32 and torch.isfinite(res.heads).all()
    assert res.neurons is not None and torch.isfinite(res.neurons).all()
    assert res.heads.abs().sum() > 0
    # the model is left exactly as it was
    assert [p.requires_grad for p in model.hf.parameters()] == flags
    assert torch.equal(wb.run_with(model, CORRUPT), before)
    if dtype == torch.bfloat16:
        ref = at.attribution_patching(tiny("LlamaForCausalLM"), CLEAN, CORRUPT, _metric())
        corr = torch.corrcoef(torch.stack([res.heads.flatten(), ref.heads.flatten()]))[0, 1]
        assert corr > 0.9


def test_neuron_attributions_sum_to_the_mlp_input_attribution():
    """Linear in the neurons: the neuron terms of one MLP add up to the gradient times the
    change of its hidden layer, which is the attribution of patching all of them."""
    model = tiny("GPT2LMHeadModel")
    res = at.attribution_patching(model, CLEAN, CORRUPT, _metric(), neurons=True)
    assert res.neurons.shape[:2] == res.mlps.shape
    assert torch.isfinite(res.neurons).all() and res.neurons.abs().sum() > 0


def _brute_qk(model, layer, clean_cap, corrupt_cap, g_head, pos):
    """Per head and per kv head: exact softmax after patching one query / one key, times
    the gradient with respect to the attention pattern (loops, no closed form)."""
    j = corrupt_cap.layer_index(layer)
    q_x, k_x = corrupt_cap.queries[j, 0].double(), corrupt_cap.keys[j, 0].double()
    v_x = corrupt_cap.values[j, 0].double()
    q_c, k_c = clean_cap.queries[j, 0].double(), clean_cap.keys[j, 0].double()
    H, s, _ = q_x.shape
    grp = model.adapter.kv_group
    scale = model.attention_scale(layer)

    def attn(q, k):
        out = torch.zeros(H, s, s, dtype=torch.float64)
        for h in range(H):
            for i in range(s):
                logits = scale * q[h, i] @ k[h // grp, : i + 1].T
                out[h, i, : i + 1] = torch.softmax(logits, -1)
        return out

    g_a = torch.zeros(H, s, s, dtype=torch.float64)
    for h in range(H):
        g_a[h] = g_head[:, h].double() @ v_x[h // grp].T
    base = attn(q_x, k_x)
    q_new = q_x.clone()
    q_new[:, pos] = q_c[:, pos]
    q_attr = ((attn(q_new, k_x) - base) * g_a).sum((-1, -2))  # [H]
    k_new = k_x.clone()
    k_new[:, pos] = k_c[:, pos]
    per_head = ((attn(q_x, k_new) - base) * g_a).sum((-1, -2))
    k_attr = torch.zeros(model.n_kv_heads, dtype=torch.float64)
    for h in range(H):
        k_attr[h // grp] += per_head[h]
    return q_attr, k_attr


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "Qwen2ForCausalLM"])
def test_atp_star_closed_form_equals_brute_force_softmax(arch):
    model = tiny(arch)
    res = at.attribution_patching(model, CLEAN, CORRUPT, _metric(), qk_fix=True)
    extra = ["queries", "keys", "values", "attn_probs"]
    c = wb.tracing.site_values(model, CLEAN, ["head_out"], what=extra)
    x = wb.tracing.site_values(
        model, CORRUPT, ["head_out"], metric=lambda lg: _metric()(lg).sum(), what=extra
    )
    layer, pos = 1, 3
    q_ref, k_ref = _brute_qk(
        model, layer, c.captured, x.captured, x.grads[(layer, "head_out")][0], pos
    )
    torch.testing.assert_close(res.queries[layer, pos].double(), q_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.keys[layer, pos].double(), k_ref, atol=1e-5, rtol=1e-4)


def test_atp_star_refuses_attention_it_cannot_recompute():
    # a strong attention-logit soft-cap: the softmax of scale * q.k is not what it computes
    model, _ = tiny_variant("Gemma2ForCausalLM", attn_logit_softcapping=0.5)
    with pytest.raises(at.AttributionError, match="qk_fix=False"):
        at.attribution_patching(model, CLEAN, CORRUPT, _metric(), qk_fix=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_dla_parts_add_up_to_the_logit_difference(arch):
    model = tiny(arch)
    m = _metric()
    dla = at.direct_logit_attribution(model, CLEAN, m)
    assert dla.total == pytest.approx(dla.uncapped, abs=1e-4)
    tokens = model.tokenize(CLEAN)
    with torch.no_grad():
        logits = model.hf(tokens.input_ids).logits[0, -1].float()
    assert dla.actual == pytest.approx(float(logits[5] - logits[7]), abs=1e-4)
    if not model.adapter.final_softcap:
        assert dla.uncapped == pytest.approx(dla.actual, abs=1e-5)
    t = dla.table()
    assert len(t) >= model.n_layers * (model.n_heads + 1) + 1
    assert t["contribution"].sum() == pytest.approx(dla.total, abs=1e-4)


def test_dla_needs_a_logit_difference_and_metrics_check_tokens():
    model = tiny("LlamaForCausalLM")
    with pytest.raises(at.AttributionError, match="LogitDiff"):
        at.direct_logit_attribution(model, CLEAN, at.LogProb(5))
    with pytest.raises(at.AttributionError, match="tokens"):
        at.LogitDiff("the cat", "a", tokenizer=model.tokenizer)
    with pytest.raises(at.AttributionError, match="one value per row"):
        at.attribution_patching(model, CLEAN, CORRUPT, lambda lg: lg.sum())
