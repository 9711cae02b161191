"""Sparse autoencoders: TopK and ReLU SAEs, training on nnsight-streamed activations, SAELens I/O.

Example:
    >>> from workbench.sae import TrainConfig, cached_saes, load_sae, save_sae
    >>> saes, reports = cached_saes(model, docs, layers=[6, 14, 22], n_tokens=100_000,
    ...                             cfg=TrainConfig(d_sae=4096, k=48))
    >>> reports[14].fvu, reports[14].l0, reports[14].dead
"""

from workbench.sae.activations import ActivationStore, harvest, residuals, token_windows
from workbench.sae.cache import cached_saes, sae_folder
from workbench.sae.model import SAE, SAEConfig, SAEConfigError, hook_name_for
from workbench.sae.saelens import (
    SAEMissingError,
    gemma_scope_folder,
    load_pretrained,
    load_sae,
    save_sae,
)
from workbench.sae.training import (
    SAEReport,
    TrainConfig,
    drop_outliers,
    evaluate_sae,
    train_sae,
    train_saes,
)

__all__ = [
    "SAE",
    "ActivationStore",
    "SAEConfig",
    "SAEConfigError",
    "SAEMissingError",
    "SAEReport",
    "TrainConfig",
    "cached_saes",
    "drop_outliers",
    "evaluate_sae",
    "gemma_scope_folder",
    "harvest",
    "hook_name_for",
    "load_pretrained",
    "load_sae",
    "residuals",
    "sae_folder",
    "save_sae",
    "token_windows",
    "train_sae",
    "train_saes",
]
