"""Function tokens (Memory Retrieval and Consolidation in LLMs through Function Tokens, 2025).

================  ===========================================================================
module            holds
================  ===========================================================================
frequency         token ranking for any tokenizer, the 40% function-token set, Zipf, coverage
bipartite         the streamed token→feature graph, degrees, coverage C(k), the Table-1 frame
reactivation      contrastive prompts: features a later function token reactivates
steering          SAE-feature steering at a function token, with the content/distant controls
loss              per-token losses (one model run), mean loss by (current F/C → next F/C)
                  with document-bootstrap intervals, over checkpoints
windows           packed windows with a document number per position
sae_fit           each SAE's FVU / L0 / dead features on the analysed text
tiny_lm           a small LM trained from scratch offline, its class losses over training
presets           the notebook's named settings (quick, full, Gemma-2 + Gemma Scope), corpus
================  ===========================================================================

SAEs themselves live in :mod:`workbench.sae`.
"""

from workbench.analysis.function_tokens.bipartite import (
    PAPER_TABLE1,
    FeatureGraph,
    GraphAccumulator,
    build_graph,
    coverage_table,
    degree_table,
    sparse_codes,
)
from workbench.analysis.function_tokens.errors import FunctionTokenError, NoFunctionTokenError
from workbench.analysis.function_tokens.frequency import (
    FunctionTokens,
    TokenFrequency,
    count_tokens,
    counts_from_ids,
    function_tokens,
    smallest_covering_set,
    zipf_table,
)
from workbench.analysis.function_tokens.loss import (
    CLASSES,
    LossDecomposition,
    TokenLosses,
    loss_decomposition,
    loss_over_checkpoints,
    per_token_losses,
    token_losses,
    transition_classes,
)
from workbench.analysis.function_tokens.presets import (
    PRESETS,
    Settings,
    corpus,
    prepare_saes,
    pythia_losses,
    settings,
)
from workbench.analysis.function_tokens.reactivation import (
    ReactivationResult,
    differing_span,
    function_positions,
    reactivated_features,
    steering_choice,
)
from workbench.analysis.function_tokens.sae_fit import POOR_FIT_FVU, fit_warning, sae_fit
from workbench.analysis.function_tokens.steering import (
    control_positions,
    feature_steering,
    greedy_generate,
    steered_text,
    steering_table,
)
from workbench.analysis.function_tokens.tiny_lm import TinyLMConfig, TinyLMRun, train_tiny_lm
from workbench.analysis.function_tokens.windows import PackedWindows, packed_windows

__all__ = [
    "CLASSES",
    "POOR_FIT_FVU",
    "PackedWindows",
    "TokenLosses",
    "fit_warning",
    "packed_windows",
    "per_token_losses",
    "sae_fit",
    "PAPER_TABLE1",
    "PRESETS",
    "Settings",
    "FeatureGraph",
    "FunctionTokenError",
    "FunctionTokens",
    "GraphAccumulator",
    "LossDecomposition",
    "NoFunctionTokenError",
    "ReactivationResult",
    "TinyLMConfig",
    "TinyLMRun",
    "TokenFrequency",
    "build_graph",
    "control_positions",
    "corpus",
    "count_tokens",
    "counts_from_ids",
    "coverage_table",
    "degree_table",
    "differing_span",
    "feature_steering",
    "function_positions",
    "function_tokens",
    "greedy_generate",
    "loss_decomposition",
    "loss_over_checkpoints",
    "prepare_saes",
    "pythia_losses",
    "reactivated_features",
    "settings",
    "smallest_covering_set",
    "sparse_codes",
    "steered_text",
    "steering_choice",
    "steering_table",
    "token_losses",
    "train_tiny_lm",
    "transition_classes",
    "zipf_table",
]
