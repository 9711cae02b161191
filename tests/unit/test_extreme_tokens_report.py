"""Notebook presets and the paper-comparison table."""

from __future__ import annotations

import pytest

from tests.models import tiny
from workbench.analysis.extreme_tokens import (
    ExtremeTokenError,
    active_dormant,
    paper_comparison,
    residual_peak_sources,
    scan_extreme_tokens,
    settings,
)
from workbench.analysis.extreme_tokens.checkpoints import step_of
from workbench.analysis.extreme_tokens.report import PAPER


def test_presets_and_overrides():
    s = settings("cpu")
    assert s.model is None and s.device == "cpu"
    assert s.sweep_layers(30) == [5, 15, 25]
    one = settings("cpu", sweep_layer_step=1, sweep_layer_start=0, scan_docs=None)
    assert one.sweep_layers(3) == [0, 1, 2]
    assert settings("cpu", scan_docs=None).scan_docs == s.scan_docs  # None keeps the preset
    gpu = settings("llama-2-7b")
    assert (gpu.device, gpu.explore) == ("cuda", (16, 25))
    with pytest.raises(ExtremeTokenError, match="Unknown preset 'gpu'"):
        settings("gpu")
    with pytest.raises(ExtremeTokenError, match=r"Unknown settings \['layers'\]"):
        settings("cpu", layers=[1])


def test_step_of_revision_names():
    assert step_of("step1000") == 1000
    assert step_of("step20000-tokens84B") == 20000
    assert step_of("main") is None


def test_paper_comparison_reports_this_models_numbers():
    model = tiny("LlamaForCausalLM")
    texts = {"code": ["def f(x): return x"], "prose": ["The cat sat. It slept."]}
    scan = scan_extreme_tokens(model, texts["prose"])
    ad = active_dormant(model, texts)
    peak = residual_peak_sources(model, texts["prose"])
    table = paper_comparison(scan, ad, peak)
    assert table["phenomenon"].tolist() == list(PAPER)
    row = table.set_index("phenomenon")["this model"]
    assert f"{scan.sink_share(0.5):.0%} of the heads" in row["attention sink"]
    assert peak.creator() in row["peak source"]
    top = ad.most_domain_specific(1).iloc[0]
    assert f"L{int(top['layer'])}H{int(top['head'])}" in row["active-dormant"]
    # without the optional results only the scan's rows remain
    assert len(paper_comparison(scan)) == 4
