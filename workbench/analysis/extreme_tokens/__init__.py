"""Extreme-token phenomena and active-dormant heads (Guo et al., 2024) on real models.

Modules:

- :mod:`.sink`: the explicit sink position (BOS, first token, first period, an index);
- :mod:`.metrics`: the four metrics per layer and head (sink mass with top keys, sink
  logit, value-state drain, residual peak), reduced inside the trace;
- :mod:`.ablations`: loss change under head ablation per domain (fast and naive sweeps),
  active / dormant classification and the most domain-specific heads;
- :mod:`.residual_peak`: which early block creates the sink's residual peak;
- :mod:`.checkpoints`: the metrics over training checkpoints (needs a model hub);
- :mod:`.presets`: the notebook's named settings (CPU, Llama-2-7B, Llama-3.1-8B, OLMo);
- :mod:`.report`: the paper's claims beside what a model shows.

Example:
    >>> from workbench.analysis.extreme_tokens import scan_extreme_tokens
    >>> scan = scan_extreme_tokens(model, ["The cat sat on the mat."])
    >>> scan.sink_share(0.5)
"""

from workbench.analysis.extreme_tokens.ablations import (
    ActiveDormant,
    SweepDocs,
    ablation_sweep,
    active_dormant,
    classify_heads,
    domain_contrast,
    naive_ablation_sweep,
    sweep_documents,
)
from workbench.analysis.extreme_tokens.checkpoints import checkpoint_dynamics, hub_available
from workbench.analysis.extreme_tokens.errors import (
    EmptyDomainError,
    ExtremeTokenError,
    SinkPositionError,
)
from workbench.analysis.extreme_tokens.metrics import (
    ExtremeTokenScan,
    PromptProfile,
    prompt_profile,
    scan_extreme_tokens,
)
from workbench.analysis.extreme_tokens.presets import PRESETS, Settings, settings
from workbench.analysis.extreme_tokens.report import paper_comparison
from workbench.analysis.extreme_tokens.residual_peak import ResidualPeak, residual_peak_sources
from workbench.analysis.extreme_tokens.sink import describe_sink, resolve_sink, sink_positions

__all__ = [
    "PRESETS",
    "ActiveDormant",
    "EmptyDomainError",
    "ExtremeTokenError",
    "ExtremeTokenScan",
    "PromptProfile",
    "ResidualPeak",
    "Settings",
    "SinkPositionError",
    "SweepDocs",
    "ablation_sweep",
    "active_dormant",
    "checkpoint_dynamics",
    "classify_heads",
    "describe_sink",
    "domain_contrast",
    "hub_available",
    "naive_ablation_sweep",
    "paper_comparison",
    "prompt_profile",
    "residual_peak_sources",
    "resolve_sink",
    "scan_extreme_tokens",
    "settings",
    "sink_positions",
    "sweep_documents",
]
