"""Regression tests for silent wrong numbers found in the tracing core (issue: one core).

Each test here failed on the code before the fix.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from tests.models import tiny, tiny_variant
from workbench.analysis.function_tokens import count_tokens, loss_decomposition
from workbench.documents import DocumentsError
from workbench.errors import InterventionError
from workbench.tracing import (
    ActivationPatch,
    BlockAblation,
    HeadAblation,
    NeuronClamp,
    Steering,
    capture,
    run_with,
)

ARCH = "LlamaForCausalLM"


def _plain(model, text="the cat sat on the mat"):
    return run_with(model, text).clone()


# -- interventions are values ------------------------------------------------------------------
def test_bind_leaves_the_users_intervention_unchanged():
    model = tiny(ARCH)
    iv = HeadAblation(layer=-1, heads=[0])
    run_with(model, "hello there", [iv])
    assert iv.layer == -1 and iv.heads == [0]
    assert not hasattr(iv, "_rows")
    # reused on another model it means that model's last layer, as written
    other = tiny("GPT2LMHeadModel")
    got = run_with(other, "hello there", [iv])
    want = run_with(other, "hello there", [HeadAblation(layer=other.n_layers - 1, heads=[0])])
    torch.testing.assert_close(got, want)


# -- activation patching across prompts of different lengths ----------------------------------
def test_patch_positions_resolve_in_each_run():
    """positions=[-1] takes the clean run's last token, not the corrupted run's index."""
    model = tiny(ARCH)
    clean_text, corrupt_text = "the quick brown fox!", "a slow cat"
    clean = capture(model, clean_text, ["resid_post"], layers=[1])
    n_clean = clean.tokens.lengths[0]
    n_corrupt = model.tokenize(corrupt_text).lengths[0]
    assert n_clean != n_corrupt
    patch = ActivationPatch.from_capture(clean, layer=1, site="resid_post", positions=[-1])
    got = capture(model, corrupt_text, ["resid_post"], layers=[1], interventions=[patch])
    torch.testing.assert_close(got.resid_post[0, 0, n_corrupt - 1], clean.resid_post[0, 0, -1])
    # the same with a bare value (an unpadded source: its length is the value's)
    bare = ActivationPatch(layer=1, value=clean.resid_post[0], positions=[-1])
    got2 = capture(model, corrupt_text, ["resid_post"], layers=[1], interventions=[bare])
    torch.testing.assert_close(got2.resid_post, got.resid_post)


def test_patch_explicit_position_map_and_errors():
    model = tiny(ARCH)
    clean = capture(model, "the quick brown fox!", ["resid_post"], layers=[0])
    p = ActivationPatch.from_capture(
        clean, layer=0, site="resid_post", positions=[1, -1], source_positions=[2, 5]
    )
    got = capture(model, "a slow cat", ["resid_post"], layers=[0], interventions=[p])
    n = got.tokens.lengths[0]
    torch.testing.assert_close(got.resid_post[0, 0, 1], clean.resid_post[0, 0, 2])
    torch.testing.assert_close(got.resid_post[0, 0, n - 1], clean.resid_post[0, 0, 5])
    with pytest.raises(InterventionError, match="same lengths"):
        run_with(model, "a slow cat", [ActivationPatch.from_capture(clean, 0, "resid_post")])
    with pytest.raises(InterventionError, match="one to one"):
        run_with(
            model,
            "a slow cat",
            [ActivationPatch.from_capture(clean, 0, "resid_post", source_positions=[1])],
        )


# -- bad interventions: named errors, model untouched -----------------------------------------
def _bad_interventions(model):
    d = model.d_model
    return [
        (HeadAblation(layer=0, heads=[0]), "single HeadAblation"),
        (["not an intervention"], "interventions\\[0\\] is a str"),
        ("HeadAblation", "list of Intervention"),
        ([HeadAblation(layer=0, heads=2)], "list of head indices"),
        ([HeadAblation(layer=0, heads=[])], "heads=\\[\\]"),
        ([Steering(layer=0, vector=torch.full((d,), float("nan")))], "NaN or inf"),
        ([Steering(layer=0, vector=torch.ones(d), scale=float("inf"))], "scale is inf"),
        ([Steering(layer=0, vector=torch.ones(d + 1))], f"shape \\[{d}\\]"),
        ([NeuronClamp(layer=0, neuron=0, value=float("nan"))], "clamp value is nan"),
        ([ActivationPatch(layer=0, value=torch.zeros(1, 4, d + 3), positions=[0])], "d_model|\\["),
        (
            [
                ActivationPatch(
                    layer=0,
                    site_name="head_out",
                    value=torch.zeros(1, 4, model.n_heads + 1, model.head_dim),
                    positions=[0],
                )
            ],
            "head_out",
        ),
        ([BlockAblation(layer=0, block="ffn")], "Unknown block"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_intervention_is_named_and_model_unchanged(case):
    model = tiny(ARCH)
    ivs, message = _bad_interventions(model)[case]
    before = _plain(model)
    with pytest.raises(InterventionError, match=message):
        run_with(model, "the cat sat on the mat", ivs)
    assert torch.equal(_plain(model), before)


def test_block_ablation_equals_a_hooked_zero():
    model = tiny(ARCH)
    tokens = model.tokenize("the cat sat on the mat")
    got = run_with(model, tokens, [BlockAblation(layer=1, block="mlp")])
    mlp = model.hf_module(f"{model.adapter.layers}.1.{model.adapter.mlp}")
    h = mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            want = model.hf(tokens.input_ids, attention_mask=tokens.attention_mask).logits
    finally:
        h.remove()
    torch.testing.assert_close(got, want)


# -- documents ---------------------------------------------------------------------------------
def test_a_bare_string_is_not_a_list_of_documents():
    model = tiny(ARCH)
    with pytest.raises(DocumentsError, match="single str"):
        count_tokens(model.tokenizer, "just one text")
    with pytest.raises(DocumentsError, match="single str"):
        loss_decomposition(model, "just one text", [0], progress=False)
    # a generator is fine: read once
    freq = count_tokens(model.tokenizer, (t for t in ["ab ab", "cd"]))
    assert int(freq.counts.sum()) > 0


# -- the function-token loss path soft-caps like HF (Gemma-2) ---------------------------------
def test_loss_decomposition_equals_hf_cross_entropy_with_softcap():
    model, hf = tiny_variant("Gemma2ForCausalLM", final_logit_softcapping=0.5)
    texts = ["the cat sat on the mat and the dog sat on the log " * 3]
    res = loss_decomposition(model, texts, [], length=32, batch_size=2, progress=False)
    from workbench.sae.activations import window_batches

    total, n = 0.0, 0
    for batch in window_batches(model, texts, length=32, batch_size=2, max_tokens=20_000):
        with torch.no_grad():
            logits = hf(batch).logits  # HF applies the soft-cap itself
        ce = F.cross_entropy(logits[:, 1:-1].flatten(0, 1), batch[:, 2:].flatten(), reduction="sum")
        total += float(ce)
        n += batch[:, 2:].numel()
    assert res.overall == pytest.approx(total / n, abs=1e-5)


def test_captured_and_lens_logits_softcap_like_hf():
    model, hf = tiny_variant("Gemma2ForCausalLM", final_logit_softcapping=0.5)
    tokens = model.tokenize("the cat sat")
    cap = wb.capture(model, tokens, ["resid_post", "logits"])
    with torch.no_grad():
        want = hf(tokens.input_ids).logits
    torch.testing.assert_close(cap.logits, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.logits_of(cap.resid_post[-1]), want, atol=1e-5, rtol=1e-5)
    assert want.abs().max() <= 0.5


def test_an_sae_for_another_width_is_named_at_encode():
    from workbench.sae import SAE, SAEConfig
    from workbench.sae.model import SAEConfigError

    sae = SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4))
    with pytest.raises(SAEConfigError, match="d_in = 32"):
        sae.encode(torch.zeros(2, 48))


def test_corpus_errors_name_the_document_by_its_corpus_index():
    from workbench.analysis.extreme_tokens import scan_extreme_tokens
    from workbench.errors import EmptyPromptError

    model = tiny(ARCH)
    docs = [f"document {i} has text" for i in range(8)]
    docs[5] = "   "
    with pytest.raises(EmptyPromptError, match="Document 5 of 8"):
        scan_extreme_tokens(model, docs, batch_size=4, progress=False)
    with pytest.raises(DocumentsError, match="document 2 holds a lone surrogate"):
        count_tokens(model.tokenizer, ["ok", "fine", "bad \ud800 text"])


def test_layers_given_as_an_int_are_named():
    from workbench.analysis.extreme_tokens import ablation_sweep
    from workbench.errors import LayerIndexError

    model = tiny(ARCH)
    before = _plain(model)
    with pytest.raises(LayerIndexError, match=r"layers=\[2\]"):
        capture(model, "the cat", ["resid_post"], layers=2)
    with pytest.raises(LayerIndexError, match="list of layer indices"):
        ablation_sweep(model, ["the cat sat on the mat"], layers=1, progress=False)
    assert torch.equal(_plain(model), before)
