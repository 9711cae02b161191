"""The Bigram-Backcopy toy of Guo et al. (2024): extreme tokens grown from scratch on a CPU.

- :mod:`.bigram_backcopy`: the task (vectorised generator, oracle risks);
- :mod:`.model`: a one-head transformer, softmax or ReLU attention, a kind per layer
  (``layers="TF,TF,MLP"``);
- :mod:`.probes`: sink mass, sink logit, value and residual norms, ablations (nnsight);
- :mod:`.training`: the training loop with probes, checkpoints and resume; presets, among
  them the authors' recipe (:data:`AUTHORS_SETTINGS`, :data:`PAPER_AUTHORS_SETTINGS`).

Views of the results live in :mod:`workbench.widgets.toy_views`.

Example:
    >>> from workbench.toy import BBTask, settings, train
    >>> result = train(settings(steps=500), task=BBTask.from_prose())
    >>> result.probes[["step", "backcopy_excess", "attn_bos_L0"]].tail(3)
"""

from workbench.toy.bigram_backcopy import PAPER_CHARS, BBTask, BBTaskError, oracle_risks
from workbench.toy.model import ToyConfig, ToyConfigError, ToyTransformer, parse_layers
from workbench.toy.probes import (
    ablation_table,
    bos_excess_table,
    growth,
    growth_table,
    order_of_events,
    probe,
)
from workbench.toy.training import (
    ARCHITECTURES,
    AUTHORS_ADAMW,
    AUTHORS_SETTINGS,
    AUTHORS_SGD,
    CPU_SETTINGS,
    PAPER_AUTHORS_SETTINGS,
    PAPER_PEAK_SETTINGS,
    PAPER_SETTINGS,
    PEAK_SETTINGS,
    CorruptCheckpointError,
    ResumeError,
    RunFolderError,
    TrainConfig,
    TrainConfigError,
    TrainResult,
    authors_settings,
    load_run,
    optimizer_variants,
    peak_settings,
    settings,
    train,
    train_variants,
)

__all__ = [
    "ARCHITECTURES",
    "AUTHORS_ADAMW",
    "AUTHORS_SETTINGS",
    "AUTHORS_SGD",
    "CPU_SETTINGS",
    "PAPER_AUTHORS_SETTINGS",
    "PAPER_CHARS",
    "PAPER_PEAK_SETTINGS",
    "PAPER_SETTINGS",
    "PEAK_SETTINGS",
    "BBTask",
    "BBTaskError",
    "CorruptCheckpointError",
    "ResumeError",
    "RunFolderError",
    "ToyConfig",
    "ToyConfigError",
    "ToyTransformer",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "ablation_table",
    "authors_settings",
    "bos_excess_table",
    "growth",
    "growth_table",
    "load_run",
    "oracle_risks",
    "optimizer_variants",
    "order_of_events",
    "parse_layers",
    "peak_settings",
    "probe",
    "settings",
    "train",
    "train_variants",
]
