"""Analysis x family matrix: every analysis entry point that takes a model, on all tiny
families, against a plain HF/torch reference of what it computes.

Covered elsewhere on every family too: captured tensors vs HF hooks (test_capture), the
extreme-token scan vs a plain-torch reference (test_extreme_tokens_metrics), fast = naive
ablation sweep (test_extreme_tokens_ablations), route exactness (test_routes_*).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.models import ARCHS, tiny
from tests.unit.reference import zero_head_in_out_proj
from tests.unit.test_extreme_tokens_residual_peak import _reference as peak_reference
from workbench.analysis.extreme_tokens import ablation_sweep, residual_peak_sources
from workbench.analysis.function_tokens import loss_decomposition
from workbench.models.tiny import tiny_hf_model
from workbench.sae.activations import harvest, window_batches

PROMPTS = ["the cat sat on the mat.", "def f(x):\n    return x + 1"]
TEXTS = ["the cat sat on the mat and the dog sat on the log. " * 4]


def _get(root, path):
    for p in path.split("."):
        root = getattr(root, p)
    return root


def _mean_loss(hf, tokens) -> float:
    with torch.no_grad():
        logits = hf(tokens.input_ids, attention_mask=tokens.attention_mask).logits.double()
    lp = torch.log_softmax(logits[:, :-1], -1)
    nll = -lp.gather(-1, tokens.input_ids[:, 1:, None]).squeeze(-1)
    valid = (tokens.attention_mask[:, 1:] * tokens.attention_mask[:, :-1]).bool()
    return float(nll[valid].mean())


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_decomposition_equals_hf_cross_entropy(arch):
    model = tiny(arch)
    res = loss_decomposition(model, TEXTS, [0, 1, 2], length=24, batch_size=2, progress=False)
    total, n = 0.0, 0
    for batch in window_batches(model, TEXTS, length=24, batch_size=2, max_tokens=20_000):
        with torch.no_grad():
            logits = model.hf(batch).logits.float()
        # the prediction made at the sink (position 0) is left out, as the analysis does
        total += float(
            F.cross_entropy(logits[:, 1:-1].flatten(0, 1), batch[:, 2:].flatten(), reduction="sum")
        )
        n += batch[:, 2:].numel()
    assert res.overall == pytest.approx(total / n, abs=1e-5)
    assert int(res.counts.to_numpy().sum()) == n


@pytest.mark.parametrize("arch", ARCHS)
def test_ablation_delta_equals_hf_with_a_zeroed_head(arch):
    model = tiny(arch)
    layer, head = 1, model.n_heads - 1
    tokens = model.tokenize(PROMPTS)
    row = ablation_sweep(model, PROMPTS, layers=[layer], heads=[head], modes=["zero"]).iloc[0]
    hf, _ = tiny_hf_model(arch)
    clean = _mean_loss(hf, tokens)
    zero_head_in_out_proj(hf, model.adapter, layer, head)
    ablated = _mean_loss(hf, tokens)
    assert row["clean_loss"] == pytest.approx(clean, abs=1e-5)
    assert row["delta_loss"] == pytest.approx(ablated - clean, abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_harvested_activations_equal_hf_hidden_states(arch, tmp_path):
    model = tiny(arch)
    store = harvest(
        model, TEXTS, [0, 1], n_tokens=40, length=16, batch_size=2, cache=False, progress=False
    )
    windows = torch.stack(list(window_batches(model, TEXTS, length=16, batch_size=64)), 0)[0]
    with torch.no_grad():
        hidden = model.hf(windows, output_hidden_states=True).hidden_states
    for layer in (0, 1):
        want = hidden[layer + 1][:, 1:].reshape(-1, model.d_model)[:40]  # sink left out
        torch.testing.assert_close(
            store.acts[layer].float(), want.to(store.acts[layer].dtype).float()
        )
    assert store.token_ids.tolist() == windows[:, 1:].reshape(-1)[:40].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_peak_equals_hooked_plain_torch(arch):
    model = tiny(arch)
    tokens = model.tokenize(PROMPTS)
    peak = residual_peak_sources(model, PROMPTS, layers=[0], at_layer=1, sink="first")
    t = peak.table.set_index("ablated")
    for name in t.index:
        block, layer = (None, None) if name == "none" else (name.split()[0], int(name.split()[1]))
        sink, med = peak_reference(arch, model, tokens, block, layer, 1)
        assert t.loc[name, "sink_norm"] == pytest.approx(sink, rel=1e-4)
        assert t.loc[name, "median_norm"] == pytest.approx(med, rel=1e-4)
