"""Attribution on the embedded SmolLM2-135M with an IOI-style pair."""

from __future__ import annotations

import pytest

from workbench.analysis import attribution as at

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def test_atp_tracks_exact_patching_and_dla_adds_up(embedded_model):
    m = at.LogitDiff(" Mary", " John", tokenizer=embedded_model.tokenizer)
    atp = at.attribution_patching(embedded_model, CLEAN, CORRUPT, m)
    assert atp.metric_clean > 2 and atp.metric_corrupt < -2  # the model does IOI
    exact = at.exact_patching(embedded_model, CLEAN, CORRUPT, m, progress=False)
    table = at.compare(atp, exact)
    # measured 0.816; AtP's known blind spot is the early MLPs, whose largest miss is MLP0
    assert table.attrs["correlation"] > 0.7
    assert table.iloc[0]["component"] == "MLP0"
    dla = at.direct_logit_attribution(embedded_model, CLEAN, m)
    assert dla.total == pytest.approx(dla.actual, abs=1e-3)
    # the head that writes the most toward " Mary" is also AtP's top head
    top_dla = divmod(int(dla.heads.abs().argmax()), embedded_model.n_heads)
    top_atp = divmod(int(atp.per_head().abs().argmax()), embedded_model.n_heads)
    assert top_dla == top_atp == (23, 3)
