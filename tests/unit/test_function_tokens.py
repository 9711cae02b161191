"""Function tokens: the 40% rule, the bipartite graph, loss classes, steering, reactivation."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.models import tiny
from workbench.analysis.function_tokens import (
    CLASSES,
    PAPER_TABLE1,
    FunctionTokenError,
    GraphAccumulator,
    NoFunctionTokenError,
    ReactivationResult,
    TinyLMConfig,
    build_graph,
    control_positions,
    count_tokens,
    counts_from_ids,
    coverage_table,
    degree_table,
    differing_span,
    feature_steering,
    function_positions,
    function_tokens,
    greedy_generate,
    loss_decomposition,
    reactivated_features,
    smallest_covering_set,
    sparse_codes,
    steering_choice,
    steering_table,
    token_losses,
    train_tiny_lm,
    transition_classes,
    zipf_table,
)
from workbench.analysis.function_tokens.tiny_lm import checkpoint_steps
from workbench.sae import SAE, SAEConfig, residuals, token_windows

# -- the 40% rule -----------------------------------------------------------------------------


def _zipf_corpus(vocab: int = 10, scale: int = 1000, n_docs: int = 7, seed: int = 0):
    """Documents whose token r (shuffled ids) occurs round(scale / rank) times overall."""
    rng = random.Random(seed)
    ids = list(range(vocab))
    rng.shuffle(ids)  # rank r has id ids[r - 1]: frequency is not id order
    counts = {ids[r - 1]: round(scale / r) for r in range(1, vocab + 1)}
    stream = [t for t, c in counts.items() for _ in range(c)]
    rng.shuffle(stream)
    docs = [stream[i::n_docs] for i in range(n_docs)]
    return docs, ids, counts


def test_forty_percent_rule_on_a_synthetic_zipf_corpus():
    docs, ids, counts = _zipf_corpus()
    freq = counts_from_ids(docs, 10)
    assert freq.counts.tolist() == [counts[i] for i in range(10)]
    # counts by rank: 1000, 500, 333, 250, 200, 167, 143, 125, 111, 100; total 2929.
    # 40% of 2929 = 1171.6: 1000 < 1171.6 <= 1500, so the top two ranks.
    ft = function_tokens(freq, 0.4)
    assert ft.ids.tolist() == ids[:2]
    assert ft.achieved == pytest.approx(1500 / 2929)
    # 60% = 1757.4: 1500 < 1757.4 <= 1833, the top three.
    assert function_tokens(freq, 0.6).ids.tolist() == ids[:3]
    assert function_tokens(freq, 1.0).ids.tolist() == ids
    assert ft.table["token_id"].tolist() == ids[:2] and ft.table["rank"].tolist() == [1, 2]


def test_covering_set_boundaries_and_ties():
    # exactly 40% is enough; float error (0.4 * 100 = 40.000000000000007) must not add a token
    assert smallest_covering_set(torch.tensor([40, 30, 30]), 0.4).tolist() == [0]
    # ties are broken by id
    assert smallest_covering_set(torch.tensor([10, 25, 25, 40]), 0.5).tolist() == [3, 1]
    with pytest.raises(FunctionTokenError, match="coverage must be in"):
        smallest_covering_set(torch.tensor([1, 2]), 0)
    with pytest.raises(FunctionTokenError, match="all counts are zero"):
        smallest_covering_set(torch.zeros(3, dtype=torch.long), 0.4)


def test_document_coverage_and_zipf_table():
    docs = [[0, 0, 1], [0, 2], [0, 1, 1, 1]]
    freq = counts_from_ids(docs, 4)
    df = freq.ranking()
    assert df["token_id"].tolist() == [0, 1, 2]  # token 3 never occurs
    assert df["count"].tolist() == [4, 4, 1]
    assert df["doc_coverage"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert df["cum_share"].tolist() == pytest.approx([4 / 9, 8 / 9, 1.0])
    z = zipf_table(counts_from_ids(_zipf_corpus(vocab=60, scale=6000)[0], 60))
    assert z.attrs["zipf_s"] == pytest.approx(1.0, abs=0.05)  # counts ~ 1 / rank


def test_count_tokens_with_a_real_tokenizer():
    tok = tiny("GPT2LMHeadModel").tokenizer
    freq = count_tokens(tok, ["aab", "ba"])
    a, b = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")
    assert int(freq.counts[a]) == 3 and int(freq.counts[b]) == 2 and freq.n_tokens == 5
    assert int(freq.doc_counts[a]) == 2 and freq.n_docs == 2
    assert freq.ranking()["token"].tolist() == ["a", "b"]


# -- the bipartite graph ----------------------------------------------------------------------

# A hand-made activation table: 8 token occurrences over a vocabulary of 5, 10 features.
TOKENS = torch.tensor([0, 1, 0, 2, 0, 1, 3, 0])
ACTS = torch.zeros(8, 10)
ACTS[0, [1, 2]] = torch.tensor([0.5, 1.0])
ACTS[1, [2]] = 2.0
ACTS[2, [3]] = 0.2
ACTS[3, [4, 5]] = 1.0
ACTS[4, [1]] = 3.0
ACTS[5, [2, 6]] = 0.7
ACTS[6, [7]] = 0.1
ACTS[7, [1, 2]] = 0.4
# token 0 -> {1, 2, 3}; token 1 -> {2, 6}; token 2 -> {4, 5}; token 3 -> {7}; token 4 -> {}.
# Features 0, 8, 9 never fire: 7 of 10 fire.


def _accumulate(chunks) -> GraphAccumulator:
    acc = GraphAccumulator(5, 10, n_contexts=2, before=1, after=0)
    for sl in chunks:
        rows, feats = ACTS[sl].nonzero(as_tuple=True)
        ctx = torch.stack([TOKENS[sl], TOKENS[sl]], 1)  # stand-in snippets
        acc.update(TOKENS[sl], rows, feats, ACTS[sl][rows, feats], ctx)
    return acc


def test_graph_degrees_and_coverage_equal_a_hand_count():
    g = _accumulate([slice(0, 8)]).result(layer=0, decode=lambda i: f"t{i}")
    assert g.degrees().tolist() == [3, 2, 2, 1, 0]
    assert [g.degree(t) for t in range(5)] == [3, 2, 2, 1, 0]
    assert g.features_of(0).tolist() == [1, 2, 3] and g.features_of(4).tolist() == []
    assert g.tokens_of(2).tolist() == [0, 1]
    assert g.token_counts.tolist() == [4, 2, 1, 1, 0]
    assert g.feature_counts.tolist() == [0, 3, 4, 1, 1, 1, 1, 1, 0, 0]
    cov = g.coverage(k_max=4)
    # frequency order: t0 (4), t1 (2), t2 (1), t3 (1; ties by id)
    assert cov["token"].tolist() == ["t0", "t1", "t2", "t3"]
    # reached: {1,2,3} -> +{6} -> +{4,5} -> +{7}
    assert cov["pct_all"].tolist() == pytest.approx([30.0, 40.0, 60.0, 70.0])
    assert cov["pct_fired"].tolist() == pytest.approx([300 / 7, 400 / 7, 600 / 7, 100.0])
    assert g.coverage(k_max=2, order=[2, 0])["pct_all"].tolist() == pytest.approx([20.0, 50.0])


def test_streaming_in_chunks_equals_one_pass_in_constant_memory():
    one = _accumulate([slice(0, 8)])
    before = {k: v.nbytes for k, v in vars(one).items() if isinstance(v, torch.Tensor)}
    chunked = _accumulate([slice(0, 3), slice(3, 4), slice(4, 8)])
    after = {k: v.nbytes for k, v in vars(chunked).items() if isinstance(v, torch.Tensor)}
    assert before == after
    for name in ("bits", "token_counts", "feature_counts", "top_vals", "top_ctx"):
        assert torch.equal(getattr(one, name), getattr(chunked, name)), name


def test_top_contexts_keep_the_highest_activations():
    g = _accumulate([slice(0, 2), slice(2, 8)]).result(0, decode=lambda i: f"t{i}")
    # feature 2 fires 1.0 (row 0), 2.0 (row 1), 0.7 (row 5), 0.4 (row 7): keep 2.0 and 1.0
    assert g.top_vals[2].tolist() == pytest.approx([2.0, 1.0])
    ctx = g.contexts(2)
    assert ctx["activation"].tolist() == pytest.approx([2.0, 1.0])
    assert ctx["token"].tolist() == ["t1", "t0"]
    assert g.contexts(0).empty
    with pytest.raises(FunctionTokenError, match="Feature 10 is out of range"):
        g.contexts(10)
    feats = g.token_features(1)
    assert feats["feature"].tolist() == [2, 6]  # feature 2 fires 4 times, 6 once


def test_coverage_table_puts_the_paper_beside_ours():
    g = _accumulate([slice(0, 8)]).result(0, decode=lambda i: f"t{i}")
    table = coverage_table({0: g}, k_max=10)
    assert table.loc[0, "L0 % all"] == 30.0 and table.loc[0, "L0 token"] == "t0"
    assert table.loc[0, "paper Gemma-2-9B L20 % all"] == PAPER_TABLE1[1][1] == 51.3
    assert table.loc[9, "paper Gemma-2-9B L9 % all"] == 48.5
    assert table["paper Gemma-2-9B L31 % all"].isna().sum() == 8  # only k = 1 and 10 known
    deg = degree_table({0: g})
    assert deg["degree_L0"].tolist() == [3, 2, 2, 1]


def _tiny_sae(model, layer: int, d_sae: int = 24, k: int = 3, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    return SAE(SAEConfig(model.d_model, d_sae, "topk", k=k, hook_layer=layer)).eval()


def test_sparse_codes_are_the_nonzeros_of_encode():
    model = tiny("LlamaForCausalLM")
    sae = _tiny_sae(model, 1)
    x = torch.randn(6, model.d_model)
    rows, feats, vals = sparse_codes(sae, x)
    dense = torch.zeros(6, 24)
    dense[rows, feats] = vals
    torch.testing.assert_close(dense, sae.encode(x).detach())


def test_build_graph_equals_a_reference_from_plain_captures():
    model = tiny("LlamaForCausalLM")
    saes = {0: _tiny_sae(model, 0), 2: _tiny_sae(model, 2, seed=1)}
    docs = ["The cat sat on the mat. The dog sat on the log. " * 3]
    graphs = build_graph(model, saes, docs, max_tokens=90, length=16, batch_size=2, progress=False)
    windows = token_windows(model, docs, length=16, max_tokens=90)
    acts = residuals(model, windows, [0, 2])
    for layer, sae in saes.items():
        edges: dict[int, set[int]] = {}
        with torch.no_grad():
            f = sae.encode(acts[layer][:, 1:].reshape(-1, model.d_model))  # sink left out
        toks = windows[:, 1:].reshape(-1).tolist()
        for r, t in enumerate(toks):
            edges.setdefault(t, set()).update(torch.nonzero(f[r] > 0).squeeze(-1).tolist())
        g = graphs[layer]
        assert g.n_tokens == len(toks)
        for t, feats in edges.items():
            assert g.features_of(t).tolist() == sorted(feats), (layer, t)
        assert int(g.degrees().sum()) == sum(len(v) for v in edges.values())
        assert torch.equal(g.feature_counts, (f > 0).sum(0))
    assert graphs[0].provenance is not None and graphs[0].provenance.settings["n_tokens"] == 90


def test_build_graph_rejects_an_sae_of_another_model():
    model = tiny("LlamaForCausalLM")
    bad = SAE(SAEConfig(model.d_model + 1, 8, "topk", k=2, hook_layer=0))
    with pytest.raises(FunctionTokenError, match="trained on another model"):
        build_graph(model, {0: bad}, ["text"], max_tokens=10, progress=False)


# -- loss classes -----------------------------------------------------------------------------


def test_loss_class_assignment_on_a_hand_made_sequence():
    # vocabulary of 6; function tokens 0 ("the") and 1 (","); others are content
    mask = torch.tensor([True, True, False, False, False, False])
    seq = torch.tensor([[2, 0, 3, 1, 1, 4, 5, 0]])
    # pairs: (2,0) C→F, (0,3) F→C, (3,1) C→F, (1,1) F→F, (1,4) F→C, (4,5) C→C, (5,0) C→F
    want = ["C→F", "F→C", "C→F", "F→F", "F→C", "C→C", "C→F"]
    got = transition_classes(seq, mask)
    assert [CLASSES[i] for i in got[0].tolist()] == want


def test_token_losses_equal_cross_entropy():
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1), reduction="none")
    torch.testing.assert_close(token_losses(logits, ids), ref.view(2, 4))


def test_loss_decomposition_equals_a_hand_computation():
    model = tiny("GPT2LMHeadModel")
    docs = ["abc, the abc. " * 20]
    fids = [model.tokenizer.convert_tokens_to_ids(c) for c in [" ", ",", "."]]
    dec = loss_decomposition(model, docs, fids, max_tokens=60, length=16, progress=False)
    windows = token_windows(model, docs, length=16, max_tokens=60)
    with torch.no_grad():
        logits = model.hf(windows).logits
    losses = token_losses(logits, windows)[:, 1:].reshape(-1)
    mask = torch.zeros(model.adapter.vocab_size, dtype=torch.bool)
    mask[fids] = True
    cls = transition_classes(windows, mask)[:, 1:].reshape(-1)
    for i, name in enumerate(CLASSES):
        cur, nxt = name.split("→")
        sel = cls == i
        assert int(dec.counts.loc[cur, nxt]) == int(sel.sum())
        if sel.any():
            assert dec.table.loc[cur, nxt] == pytest.approx(float(losses[sel].mean()), rel=1e-5)
    assert dec.overall == pytest.approx(float(losses.mean()), rel=1e-5)
    assert set(dec.long()["class"]) == set(CLASSES)


# -- steering and reactivation ----------------------------------------------------------------


def test_positions_helpers():
    assert function_positions([0, 5, 0, 7, 1], [0, 1]) == [2, 4]  # the sink (0) left out
    assert function_positions([0, 5, 0], [0], skip_first=False) == [0, 2]
    assert differing_span([1, 2, 3, 9], [1, 5, 6, 3, 9]) == (1, 2, 1, 3)
    ids = [9, 0, 5, 6, 1, 7, 0]
    assert control_positions(ids, [0, 1]) == {
        "last function token": 6,
        "content token": 5,
        "distant function token": 1,
    }
    with pytest.raises(NoFunctionTokenError, match="controls need two"):
        control_positions([9, 5, 0], [0])


@pytest.mark.slow
def test_steering_changes_the_output_and_leaves_the_model_unchanged():
    model = tiny("LlamaForCausalLM")
    sae = _tiny_sae(model, 1)
    prompt = "the cat, the dog"
    tokens = model.tokenize(prompt)
    with torch.no_grad():
        before = model.hf(tokens.input_ids).logits.clone()
    base = greedy_generate(model, prompt, max_new_tokens=6)
    steer = feature_steering(sae, 3, strength=200.0, positions=[tokens.lengths[0] - 1])
    steered = greedy_generate(model, prompt, max_new_tokens=6, steering=[steer])
    assert steered != base
    with torch.no_grad():
        after = model.hf(tokens.input_ids).logits
    assert torch.equal(after, before)  # the next plain forward pass is bit-identical
    assert greedy_generate(model, prompt, max_new_tokens=6) == base
    with pytest.raises(NoFunctionTokenError, match="absolute"):
        greedy_generate(model, prompt, steering=[feature_steering(sae, 3, 1.0, [-1])])


@pytest.mark.slow
def test_batched_steering_equals_one_generation_per_condition():
    model = tiny("LlamaForCausalLM")
    sae = _tiny_sae(model, 1)
    ids = model.tokenize("the cat, the dog,").input_ids
    fids = [model.tokenizer.convert_tokens_to_ids(c) for c in [" ", ","]]
    df = steering_table(
        model,
        sae,
        "the cat, the dog,",
        feature=3,
        strength=200.0,
        function_ids=fids,
        max_new_tokens=4,
    )
    decode = model.tokenizer.decode
    assert df.loc[0, "text"] == decode(greedy_generate(model, ids, max_new_tokens=4))
    for j in range(1, 4):
        steer = feature_steering(sae, 3, 200.0, [int(df.loc[j, "position"])])
        alone = greedy_generate(model, ids, max_new_tokens=4, steering=[steer])
        assert df.loc[j, "text"] == decode(alone), df.loc[j, "condition"]


def test_steering_table_has_the_controls():
    model = tiny("LlamaForCausalLM")
    sae = _tiny_sae(model, 1)
    fids = [model.tokenizer.convert_tokens_to_ids(c) for c in [" ", ","]]
    df = steering_table(
        model,
        sae,
        "the cat, the dog,",
        feature=3,
        strength=200.0,
        function_ids=fids,
        max_new_tokens=4,
    )
    assert df["condition"].tolist() == [
        "baseline",
        "last function token",
        "content token",
        "distant function token",
    ]
    strings = model.tokenize("the cat, the dog,").strings[0]
    last = df.loc[1, "position"]
    assert last == len(strings) - 1 and strings[last] == ","
    assert strings[df.loc[2, "position"]] == "g"  # the last content token before it
    assert strings[df.loc[3, "position"]] == " " and df.loc[3, "position"] == 4
    assert df.loc[1, "changed"]  # steering the last token's own residual changes the output


def test_reactivated_features_match_a_manual_encoding():
    model = tiny("LlamaForCausalLM")
    sae = _tiny_sae(model, 2, d_sae=32, k=6)
    a, b = "capital of Russia?\nA:", "capital of the UK?\nA:"
    fids = [model.tokenizer.convert_tokens_to_ids(c) for c in [" ", ":", "?"]]
    r = reactivated_features(model, sae, a, b, fids, top=32)
    ids_a = model.tokenize(a).input_ids
    with torch.no_grad():
        fa = sae.encode(residuals(model, ids_a, [2])[2][0])
    assert r.function_position_a == ids_a.shape[1] - 1  # ':' is the last function token
    row = r.table.iloc[0]
    feat = int(row["feature"])
    assert row["at_function_a"] == pytest.approx(float(fa[r.function_position_a, feat]))
    assert row["at_content_a"] == pytest.approx(float(fa[r.content_positions, feat].max()))
    t = r.table
    assert (t["content_specific"] == ((t["at_function_a"] > 0) & (t["at_function_b"] == 0))).all()
    assert (t["reactivated"] == (t["content_specific"] & (t["at_content_a"] > 0))).all()
    group = 2 - t["reactivated"].astype(int) - t["content_specific"].astype(int)
    assert group.is_monotonic_increasing  # reactivated, then content-specific, then the rest
    assert all((g["diff"].diff().dropna() <= 1e-6).all() for _, g in t.groupby(group))
    assert set(r.reactivated) <= set(r.content_specific) <= set(r.table["feature"])
    with pytest.raises(NoFunctionTokenError, match="must differ"):
        reactivated_features(model, sae, a, a, fids)


def _react(features, content_specific, reactivated):
    table = pd.DataFrame(
        {
            "feature": features,
            "content_specific": content_specific,
            "reactivated": reactivated,
        }
    )
    return ReactivationResult(0, [], [], [], 0, 0, table)


def test_steering_choice_takes_reactivated_then_content_specific_then_firing():
    assert steering_choice(_react([9, 4], [True, True], [True, False])) == (9, "reactivated")
    assert steering_choice(_react([7, 3], [True, False], [False, False])) == (
        7,
        "content-specific",
    )
    assert steering_choice(_react([5], [False], [False])) == (5, "firing")
    with pytest.raises(NoFunctionTokenError, match="No SAE feature fires at .* layer 0"):
        steering_choice(_react([], [], []))


# -- the tiny LM ------------------------------------------------------------------------------


def test_checkpoint_steps_are_geometric():
    assert checkpoint_steps(1000, 4) == [0, 10, 100, 1000]
    assert checkpoint_steps(5, 2) == [0, 5]


@pytest.mark.slow
def test_tiny_lm_trains_and_saves_safetensors_checkpoints(tmp_path):
    tok = tiny("GPT2LMHeadModel").tokenizer
    docs = ["the cat sat on the mat, and the dog sat on the log. " * 30]
    fids = function_tokens(count_tokens(tok, docs), 0.4).ids
    cfg = TinyLMConfig(
        vocab_size=40,
        d_model=16,
        d_mlp=32,
        n_heads=2,
        context=16,
        batch_size=4,
        steps=12,
        n_checkpoints=3,
        eval_windows=4,
    )
    run = train_tiny_lm(tok, docs, fids, cfg, tmp_path, progress=False)
    assert [p.name for p in run.checkpoints] == ["step0", "step3", "step12"]
    assert run.steps == 12
    assert all((p / "model.safetensors").is_file() for p in run.checkpoints)
    losses = run.losses.pivot(index="step", columns="class", values="mean_loss")
    assert list(losses.index) == [0, 3, 12]
    assert losses.loc[12, "all"] < losses.loc[0, "all"]
    assert set(CLASSES) <= set(losses.columns)
    assert isinstance(pd.read_csv(tmp_path / "losses.csv"), pd.DataFrame)
