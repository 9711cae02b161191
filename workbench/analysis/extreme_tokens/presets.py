"""Named settings for the active-dormant notebook (02).

=================  ==========================================================================
preset             what it is for
=================  ==========================================================================
``cpu``            CI and a first look on the embedded SmolLM2-135M: 8 documents per domain
                   (64 tokens for the metrics, 32 for the sweep), the zero-ablation sweep
                   at layers 5, 15 and 25 (minutes on 2 cores)
``cpu-full``       the same model, 32 x 128-token documents for the metrics and a sweep of
                   every fifth layer, both ablations, over 16 x 64-token documents per
                   domain (not measured; estimated at 1 to 1.5 hours on 2 busy cores from
                   the measured 88 s of one layer at 8 x 32 tokens, both ablations)
``llama-2-7b``     GPU and hub: Llama-2-7B, the paper's active-dormant example (L16H25)
``llama-3.1-8b``   GPU and hub: Llama-3.1-8B, the paper's residual-peak example (MLP 0)
``olmo-7b``        GPU and hub: OLMo-7B (no BOS: the sink is the first token)
=================  ==========================================================================

The checkpoint section uses Pythia revisions (``step0`` ... ``step143000``, the names
every Pythia repository on the hub has).

Example:
    >>> s = settings("cpu", sweep_docs=4)          # overrides; None means "keep the preset"
    >>> s.sweep_layers(30)
    [5, 15, 25]
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from workbench.analysis.extreme_tokens.errors import ExtremeTokenError

__all__ = ["PRESETS", "Settings", "settings"]

PYTHIA_STEPS = ("step0", "step512", "step2000", "step8000", "step32000", "step143000")


@dataclass(frozen=True)
class Settings:
    """Everything the notebook's sections need; see :data:`PRESETS`."""

    name: str
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    device: str = "cpu"
    dtype: str | None = None  # e.g. "bfloat16" on a GPU
    sink: str | int = "auto"
    scan_docs: int = 8  # documents per domain for the four metrics
    scan_tokens: int = 64
    batch_size: int = 4
    sweep_docs: int = 8  # documents per domain for the ablation sweep
    sweep_tokens: int = 32
    sweep_layer_step: int = 10  # sweep every n-th layer (1: all) ...
    sweep_layer_start: int = 5  # ... from this layer on
    sweep_modes: tuple[str, ...] = ("zero",)  # ablations swept: "zero", "sink"
    copies_per_pass: int | None = None  # (head, mode) ablations per batched pass
    peak_docs: int = 2
    explore: tuple[int, int] | None = None  # (layer, head) to open the explorer on
    checkpoint_model: str = "EleutherAI/pythia-160m"
    checkpoint_revisions: tuple[str, ...] = PYTHIA_STEPS
    checkpoint_docs: int = 4

    def sweep_layers(self, n_layers: int) -> list[int]:
        """The layers the ablation sweep covers."""
        start = min(max(0, self.sweep_layer_start), n_layers - 1)
        return list(range(start, n_layers, max(1, self.sweep_layer_step)))


PRESETS: dict[str, Settings] = {
    "cpu": Settings("cpu"),
    "cpu-full": Settings(
        "cpu-full",
        scan_docs=32,
        scan_tokens=128,
        sweep_docs=16,
        sweep_tokens=64,
        sweep_layer_step=5,
        sweep_layer_start=0,
        sweep_modes=("zero", "sink"),
        peak_docs=8,
    ),
    "llama-2-7b": Settings(
        "llama-2-7b",
        model="meta-llama/Llama-2-7b-hf",
        device="cuda",
        dtype="bfloat16",
        scan_docs=64,
        scan_tokens=256,
        batch_size=8,
        sweep_docs=32,
        sweep_tokens=128,
        sweep_layer_step=1,
        sweep_layer_start=0,
        sweep_modes=("zero", "sink"),
        copies_per_pass=16,
        peak_docs=16,
        explore=(16, 25),
        checkpoint_model="EleutherAI/pythia-1.4b",
        checkpoint_docs=16,
    ),
    "llama-3.1-8b": Settings(
        "llama-3.1-8b",
        model="meta-llama/Llama-3.1-8B",
        device="cuda",
        dtype="bfloat16",
        scan_docs=64,
        scan_tokens=256,
        batch_size=8,
        sweep_docs=32,
        sweep_tokens=128,
        sweep_layer_step=1,
        sweep_layer_start=0,
        sweep_modes=("zero", "sink"),
        copies_per_pass=16,
        peak_docs=16,
        checkpoint_model="EleutherAI/pythia-1.4b",
        checkpoint_docs=16,
    ),
    "olmo-7b": Settings(
        "olmo-7b",
        model="allenai/OLMo-7B-0724-hf",
        device="cuda",
        dtype="bfloat16",
        scan_docs=64,
        scan_tokens=256,
        batch_size=8,
        sweep_docs=32,
        sweep_tokens=128,
        sweep_layer_step=1,
        sweep_layer_start=0,
        sweep_modes=("zero", "sink"),
        copies_per_pass=16,
        peak_docs=16,
        checkpoint_model="EleutherAI/pythia-1.4b",
        checkpoint_docs=16,
    ),
}


def settings(preset: str = "cpu", **overrides: Any) -> Settings:
    """The preset's settings with ``overrides`` applied (``None`` values keep the preset's)."""
    if preset not in PRESETS:
        raise ExtremeTokenError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    names = {f.name for f in fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ExtremeTokenError(f"Unknown settings {unknown}; known: {sorted(names)}.")
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in ("checkpoint_revisions", "explore", "sweep_modes"):
        if key in given:
            given[key] = tuple(given[key])
    return replace(PRESETS[preset], **given)
