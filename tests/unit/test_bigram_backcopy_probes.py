"""Probes against a slow plain-torch reference on hand-set weights."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from workbench.toy.bigram_backcopy import BBTask, oracle_risks
from workbench.toy.model import ToyConfig, ToyConfigError, ToyTransformer
from workbench.toy.probes import ablation_table, order_of_events, probe


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _task() -> BBTask:
    bigram = torch.tensor(
        [[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64
    )
    return BBTask(
        "abc", bigram, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([2])
    )


def _hand_set(model: ToyTransformer) -> None:
    """Deterministic, non-trivial weights: a fixed formula per parameter, no RNG."""
    for j, (name, p) in enumerate(sorted(model.named_parameters())):
        n = p.numel()
        vals = torch.sin(torch.arange(n, dtype=torch.float32) * (0.7 + 0.13 * j) + j)
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or "ln_f" in name:
            vals = 1.0 + 0.3 * vals  # LayerNorm gains near 1
        p.data = vals.reshape(p.shape)


def _ln(h: torch.Tensor, g: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    out = (h - mu) / torch.sqrt(var + 1e-5) * g
    return out if bias is None else out + bias


def _reference(
    model: ToyTransformer, task: BBTask, x: torch.Tensor, *, authors: bool = False
) -> dict[str, float]:
    """Forward pass and probes written out by hand, one loop per query.

    ``authors``: the authors' definitions: the BOS query counts in the attention on BOS; the
    sink logit's other keys leave out the query's own, averaged per query character first;
    the value norm is ||v|| before W_O.
    """
    w = {n: p.detach().double() for n, p in model.named_parameters()}
    b, t = x.shape
    h = w["embed.weight"][x] + w["pos.weight"][:t]
    resid, out = [h], {}
    trig = set(task.triggers.tolist())
    for l, block in enumerate(model.blocks):
        pre = f"blocks.{l}."
        if block.attn is not None:
            z = _ln(h, w[pre + "ln1.weight"], w.get(pre + "ln1.bias"))
            q = z @ w[pre + "attn.q_proj.weight"].T
            k = z @ w[pre + "attn.k_proj.weight"].T
            v = z @ w[pre + "attn.v_proj.weight"].T
            wo = w[pre + "attn.o_proj.weight"]
            d = q.shape[-1]
            a = torch.zeros_like(h)
            bos, sink, bos_t, prev_t = [], [], [], []
            sink_by_type: dict[int, list[torch.Tensor]] = {}
            for bi in range(b):
                for i in range(t):
                    s = torch.stack([q[bi, i] @ k[bi, j] / math.sqrt(d) for j in range(i + 1)])
                    if model.cfg.attention == "softmax":
                        p = torch.softmax(s, 0)
                    else:
                        p = torch.relu(s) / (i + 1)
                    a[bi, i] = sum(p[j] * v[bi, j] for j in range(i + 1)) @ wo.T
                    if i == 0:
                        if authors:  # BOS attends only to itself: p[0] = 1 with softmax
                            bos.append(p[0])
                        continue
                    if int(x[bi, i]) in trig:
                        bos_t.append(p[0])
                        prev_t.append(p[i - 1])
                    else:
                        bos.append(p[0])
                        sink.append(s[0] - s[1:].mean())
                        if i >= 2:  # keys 1..i-1: at least one besides BOS and the query
                            gap = s[0] - s[1:i].mean()
                            sink_by_type.setdefault(int(x[bi, i]), []).append(gap)
            h = h + a
            out[f"attn_bos_L{l}"] = float(torch.stack(bos).mean())
            if authors:
                per_type = [torch.stack(g).mean() for g in sink_by_type.values()]
                out[f"sink_logit_L{l}"] = float(torch.stack(per_type).mean())
            else:
                out[f"sink_logit_L{l}"] = float(torch.stack(sink).mean())
            out[f"attn_bos_trigger_L{l}"] = float(torch.stack(bos_t).mean())
            out[f"attn_prev_trigger_L{l}"] = float(torch.stack(prev_t).mean())
            vo = torch.stack(
                [
                    torch.linalg.norm(v[bi, j] if authors else v[bi, j] @ wo.T)
                    for bi in range(b)
                    for j in range(t)
                ]
            ).reshape(b, t)
            out[f"bos_value_norm_L{l}"] = float(vo[:, 0].mean())
            out[f"other_value_norm_L{l}"] = float(vo[:, 1:].mean())
        if block.mlp is not None:
            z = _ln(h, w[pre + "ln2.weight"], w.get(pre + "ln2.bias"))
            h = h + torch.relu(z @ w[pre + "mlp.up.weight"].T) @ w[pre + "mlp.down.weight"].T
        resid.append(h)
    for kk, r in enumerate(resid):
        norms = torch.linalg.norm(r, dim=-1)
        out[f"bos_resid_norm_{kk}"] = float(norms[:, 0].mean())
        out[f"other_resid_norm_{kk}"] = float(norms[:, 1:].mean())
    logits = _ln(h, w["ln_f.weight"], w.get("ln_f.bias")) @ w["unembed.weight"].T
    out.update(vars(oracle_risks(task, x, logits)))
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        dict(n_layers=1, attention="softmax"),
        dict(n_layers=1, attention="relu"),
        dict(n_layers=2, no_mlp_layers=(1,)),
    ],
    ids=["softmax", "relu", "2-layer"],
)
def test_probes_equal_plain_torch_reference(cfg):
    task = _task()
    model = ToyTransformer(ToyConfig(vocab_size=4, d_model=6, d_mlp=10, max_seq_len=16, **cfg))
    _hand_set(model)
    x = task.sample(3, 16, seed=4)
    got = probe(model, task, x)
    ref = _reference(model, task, x)
    assert set(ref) <= set(got)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, rel=1e-4, abs=1e-5), key
    # The reference is not trivially satisfied: the sink logit is a real number here.
    assert abs(ref["sink_logit_L0"]) > 1e-3


@pytest.mark.parametrize(
    "cfg",
    [
        dict(n_layers=1, attention="softmax"),
        dict(n_layers=1, attention="relu", ln_bias=True),
        dict(layers="TF,TF,MLP", ln_bias=True),
    ],
    ids=["softmax", "relu-ln-bias", "2xTF+MLP-ln-bias"],
)
def test_authors_probe_definitions_equal_a_hand_written_reference(cfg):
    task = _task()
    model = ToyTransformer(ToyConfig(vocab_size=4, d_model=6, d_mlp=10, max_seq_len=16, **cfg))
    _hand_set(model)
    x = task.sample(3, 16, seed=4)
    got = probe(model, task, x, style="authors")
    ref = _reference(model, task, x, authors=True)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, rel=1e-4, abs=1e-5), key
    # The two styles really differ on these three probes, and agree on the rest. (With ReLU
    # attention these weights put no attention on BOS at all, in either style.)
    ours = probe(model, task, x)
    differ = ("sink_logit_L0", "bos_value_norm_L0")
    for key in differ + (("attn_bos_L0",) if model.cfg.attention == "softmax" else ()):
        assert ours[key] != pytest.approx(got[key], rel=1e-3), key
    assert ours["bos_resid_norm_1"] == pytest.approx(got["bos_resid_norm_1"])
    assert ours["attn_prev_trigger_L0"] == pytest.approx(got["attn_prev_trigger_L0"])


def test_unknown_probe_style_is_refused():
    task = _task()
    model = ToyTransformer(ToyConfig(vocab_size=4, d_model=6, d_mlp=10, max_seq_len=16))
    with pytest.raises(ToyConfigError, match=r"Unknown probe style 'paper'.*'project', 'authors'"):
        probe(model, task, task.sample(1, 8, seed=0), style="paper")


def test_ablation_table_zeroes_one_block_at_a_time():
    task = _task()
    model = ToyTransformer(ToyConfig(vocab_size=4, d_model=6, d_mlp=10, max_seq_len=16, n_layers=2))
    _hand_set(model)
    x = task.sample(2, 16, seed=1)
    table = ablation_table(model, task, x)
    assert list(table.index) == ["Original", "No Attn L0", "No MLP L0", "No Attn L1", "No MLP L1"]
    # Ablating layer 1's MLP leaves streams 0 and 1 alone and changes stream 2.
    orig, no_mlp1 = table.loc["Original"], table.loc["No MLP L1"]
    assert no_mlp1["bos_resid_norm_1"] == pytest.approx(orig["bos_resid_norm_1"])
    assert no_mlp1["bos_resid_norm_2"] != pytest.approx(orig["bos_resid_norm_2"])
    # "No Attn L0" at BOS: BOS attends only to itself, so the stream moves by v_BOS W_O.
    assert table.loc["No Attn L0", "bos_resid_norm_0"] == pytest.approx(orig["bos_resid_norm_0"])
    # The model is unchanged afterwards.
    assert probe(model, task, x)["bos_resid_norm_2"] == pytest.approx(orig["bos_resid_norm_2"])
    with pytest.raises(ToyConfigError, match="outside"):
        probe(model, task, x, ablate_mlp=(5,))


def test_order_of_events_finds_the_half_way_points():
    df = pd.DataFrame(
        {
            "step": [0, 10, 20, 30, 40, 50],
            "backcopy_excess": [1.0, 0.1, 0.005, 0.001, 0.0001, 0.0001],  # log half-way: 0.01
            "attn_bos_L0": [0.0, 0.1, 0.3, 0.5, 0.9, 1.0],  # half-way 0.5 at step 30
            "sink_logit_L0": [0.0, 0.0, 4.0, 6.0, 10.0, 9.0],  # half-way 5 at step 30
            "bos_value_norm_L0": [1.0, 2.0, 1.8, 1.6, 1.4, 1.0],  # peak 2 at 10, half-way 1.5
        }
    )
    ev = order_of_events(df)
    assert ev == {
        "backcopy learned": 20.0,
        "sink logit": 30.0,
        "sink mass": 30.0,
        "value drain": 40.0,
    }
    flat = df.assign(attn_bos_L0=0.3, bos_value_norm_L0=[1.0, 1.0, 1.01, 1.0, 1.0, 1.0])
    ev = order_of_events(flat)
    assert math.isnan(ev["sink mass"]) and math.isnan(ev["value drain"])
    assert order_of_events(df, fraction=0.9)["sink mass"] == 40.0


def test_growth_and_growth_table():
    from workbench.toy.probes import growth, growth_table

    adam = pd.DataFrame({"step": [0, 10, 20], "bos_resid_norm_0": [1.0, 2.0, 4.0]})
    sgd = pd.DataFrame({"step": [0, 10, 20], "bos_resid_norm_0": [1.0, 1.2, 1.5]})
    relu = pd.DataFrame({"step": [0, 10, 20], "bos_resid_norm_0": [1.0, 0.9, 0.75]})
    assert growth(adam, "bos_resid_norm_0") == 3.0
    assert growth(adam, "bos_resid_norm_0", until=10) == 1.0
    table = growth_table({"Adam": adam, "SGD": sgd, "ReLU": relu})
    assert table.loc["SGD", "growth bos_resid_norm_0"] == pytest.approx(0.5)
    assert table.loc["SGD", "Adam / this bos_resid_norm_0"] == pytest.approx(6.0)
    assert table.loc["ReLU", "Adam / this bos_resid_norm_0"] == pytest.approx(12.0)  # |-0.25|
    with pytest.raises(KeyError, match="nope"):
        growth(adam, "nope")
