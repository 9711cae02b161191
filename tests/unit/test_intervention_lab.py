"""The intervention lab: specs -> interventions, clean vs intervened, the printed Python
reproduces the run, and the widget's controls build specs and change the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from tests.models import tiny
from workbench.analysis.lab import build_interventions, lab_run, python_code
from workbench.errors import InterventionError
from workbench.widgets.controls import ControlValueError
from workbench.widgets.lab_view import InterventionLab, parse_edges, parse_ints

PROMPT, SOURCE = "the cat sat on", "a dog ran far away"
SPECS = [
    {"kind": "ablate", "layer": 0, "heads": [1], "mode": "mean"},
    {"kind": "knockout", "layer": 1, "edges": [[-1, 0]]},
    {"kind": "patch", "layer": 1, "site": "resid_post", "positions": [-1]},
    {"kind": "steer", "layer": 2, "vector": "v", "scale": 3.0, "positions": [-1]},
    {"kind": "clamp", "layer": 1, "neuron": 3, "value": 2.0, "positions": [-1]},
]


def _vectors(model):
    g = torch.Generator().manual_seed(1)
    return {"v": torch.randn(model.d_model, generator=g)}


@pytest.mark.parametrize("spec", SPECS, ids=[s["kind"] for s in SPECS])
def test_each_kind_changes_the_run_and_leaves_the_model_alone(spec):
    model = tiny("LlamaForCausalLM")
    before = wb.run_with(model, PROMPT).clone()
    res = lab_run(model, PROMPT, [spec], source=SOURCE, vectors=_vectors(model), good=5, bad=7)
    assert res.logit_diff[0] != pytest.approx(res.logit_diff[1], abs=1e-7)
    assert not np.allclose(res.top["clean"], res.top["intervened"])
    assert len(res.lens) == model.n_layers
    assert res.provenance.settings["specs"] == [spec]
    assert torch.equal(wb.run_with(model, PROMPT), before)


def test_printed_python_reproduces_the_composed_run():
    model = tiny("LlamaForCausalLM")
    vectors = _vectors(model)
    res = lab_run(model, PROMPT, SPECS, source=SOURCE, vectors=vectors, k=5)
    ns = {"wb": wb, "model": model, "prompt": PROMPT, "source": SOURCE, "vectors": vectors}
    exec(python_code(SPECS), ns)  # noqa: S102 - the lab's output is meant to be run
    probs = ns["logits"][0, -1].float().softmax(-1)
    ids = [model.tokenizer.convert_tokens_to_ids(t) for t in res.top["token"]]
    got = res.top_intervened["intervened"].to_numpy()
    want = np.sort(probs.numpy())[::-1][: len(got)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert len(ids) == 5


def test_patch_copies_the_source_runs_last_token():
    model = tiny("LlamaForCausalLM")
    ivs = build_interventions(
        model,
        PROMPT,
        [{"kind": "patch", "layer": 2, "site": "resid_post", "positions": [-1]}],
        source=SOURCE,
    )
    got = wb.capture(model, PROMPT, ["resid_post"], layers=[2], interventions=ivs)
    src = wb.capture(model, SOURCE, ["resid_post"], layers=[2])
    torch.testing.assert_close(got.resid_post[0, 0, -1], src.resid_post[0, 0, -1])


def test_bad_specs_are_named():
    model = tiny("LlamaForCausalLM")
    with pytest.raises(InterventionError, match="Unknown intervention kind"):
        build_interventions(model, PROMPT, [{"kind": "zap", "layer": 0}])
    with pytest.raises(InterventionError, match="second prompt"):
        build_interventions(model, PROMPT, [{"kind": "patch", "layer": 0}])
    with pytest.raises(InterventionError, match="Unknown steering vector"):
        build_interventions(model, PROMPT, [{"kind": "steer", "layer": 0, "vector": "x"}])
    with pytest.raises(InterventionError, match="lacks"):
        build_interventions(model, PROMPT, [{"kind": "ablate"}])


def test_parsers():
    assert parse_ints("0, 3 5", "heads") == [0, 3, 5]
    assert parse_edges("-1->0, 5->2") == [[-1, 0], [5, 2]]
    with pytest.raises(ControlValueError, match="whole numbers"):
        parse_ints("a", "heads")
    with pytest.raises(ControlValueError, match="query->key"):
        parse_edges("3-0")


def test_lab_widget_builds_specs_from_controls_and_redraws():
    model = tiny("LlamaForCausalLM")
    vectors = _vectors(model)

    def compute(prompt, specs, source):
        return lab_run(model, prompt, specs, source=source, vectors=vectors, good=5, bad=7, n_new=3)

    lab = InterventionLab(
        compute,
        prompt=PROMPT,
        source=SOURCE,
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        vectors=list(vectors),
        wait=0,
    )
    clean_bars = np.asarray(lab.figure.data[1].x, dtype=float).copy()
    assert "0 intervention" in lab.figure.layout.title.text
    lab.kind.value = "ablate"
    lab.layer.value, lab.heads.value, lab.mode.value = 1, "0, 2", "zero"
    lab.add_from_controls()
    assert lab.specs == [{"kind": "ablate", "layer": 1, "heads": [0, 2], "mode": "zero"}]
    assert not np.allclose(np.asarray(lab.figure.data[1].x, dtype=float), clean_bars)
    assert "heads&#x27;: [0, 2]" in lab.code.value or "'heads': [0, 2]" in lab.code.value
    lab.kind.value = "steer"
    assert lab.vector in lab.fields.children and lab.heads not in lab.fields.children
    lab.scale.value = 5.0
    lab.add_from_controls()
    assert lab.specs[-1]["vector"] == "v" and "2 intervention" in lab.figure.layout.title.text
    lab.pop()
    assert len(lab.specs) == 1
    lab.kind.value = "ablate"
    lab.heads.value = "99"
    lab._guarded(lab.add_from_controls)
    assert "could not update" in lab.status.value and len(lab.specs) == 1
    lab.clear()
    assert lab.specs == [] and "0 intervention" in lab.figure.layout.title.text
    bundle = lab._repr_mimebundle_()
    assert "Python for these" in bundle["text/html"]
