"""nnsight capture, interventions, tail re-runs, logit lens, streaming and the self-test.

The only package that traces a language model (the Bigram-Backcopy toy, a model of our
own, keeps its own probes).
"""

from workbench.models.checks import register_load_check
from workbench.tracing.capture import CAPTURABLE, Capture, LayerReduce, capture, run_with
from workbench.tracing.gradients import PROBE_SITES, SiteProbe, SiteValues, site_values
from workbench.tracing.interventions import (
    ActivationPatch,
    AttentionKnockout,
    BlockAblation,
    HeadAblation,
    Intervention,
    NeuronClamp,
    Steering,
)
from workbench.tracing.lens import logit_lens, logit_lens_table, unembed
from workbench.tracing.provenance import Provenance
from workbench.tracing.selftest import self_test
from workbench.tracing.streaming import Reducer, stream
from workbench.tracing.tail import run_from

register_load_check(self_test)

__all__ = [
    "CAPTURABLE",
    "ActivationPatch",
    "AttentionKnockout",
    "BlockAblation",
    "Capture",
    "HeadAblation",
    "Intervention",
    "LayerReduce",
    "PROBE_SITES",
    "SiteProbe",
    "SiteValues",
    "NeuronClamp",
    "Provenance",
    "Reducer",
    "Steering",
    "capture",
    "logit_lens",
    "logit_lens_table",
    "run_from",
    "run_with",
    "site_values",
    "stream",
    "unembed",
]
