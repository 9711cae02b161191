"""Gradient attribution and direct logit attribution, on the tracing core.

- :func:`attribution_patching` (AtP, and AtP*'s attention fix with ``qk_fix=True``):
  the effect of patching every head output, MLP output (and neuron) from a clean run
  into a corrupted one, from two forward passes and one backward pass;
- :func:`exact_patching`: the same effects run for real, one patched run per component;
  :func:`compare` puts the two side by side (correlation, largest misses);
- :func:`direct_logit_attribution`: each head's, MLP's and the embedding's direct
  contribution to a logit difference, through the final norm frozen at its clean scale.

Example:
    >>> from workbench.analysis import attribution as at
    >>> m = at.LogitDiff(" Mary", " John", tokenizer=model.tokenizer)
    >>> atp = at.attribution_patching(model, clean, corrupt, m)
    >>> at.compare(atp, at.exact_patching(model, clean, corrupt, m)).attrs["correlation"]
"""

from workbench.analysis.attribution.atp import (
    AtPResult,
    ExactPatching,
    attribution_patching,
    compare,
    exact_patching,
)
from workbench.analysis.attribution.dla import DLAResult, direct_logit_attribution
from workbench.analysis.attribution.metrics import (
    AttributionError,
    CallableMetric,
    LogitDiff,
    LogProb,
    Metric,
    as_metric,
)

__all__ = [
    "AtPResult",
    "AttributionError",
    "CallableMetric",
    "DLAResult",
    "ExactPatching",
    "LogProb",
    "LogitDiff",
    "Metric",
    "as_metric",
    "attribution_patching",
    "compare",
    "direct_logit_attribution",
    "exact_patching",
]
