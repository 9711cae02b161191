"""The Bigram-Backcopy toy of Guo et al. (2024): extreme tokens grown from scratch on a CPU.

- :mod:`.bigram_backcopy`: the task (vectorised generator, oracle risks);
- :mod:`.model`: a 1-3 layer one-head transformer, softmax or ReLU attention;
- :mod:`.probes`: sink mass, sink logit, value and residual norms, ablations (nnsight);
- :mod:`.training`: the training loop with probes, checkpoints and resume.

Views of the results live in :mod:`workbench.widgets.toy_views`.

Example:
    >>> from workbench.toy import BBTask, settings, train
    >>> result = train(settings(steps=500), task=BBTask.from_prose())
    >>> result.probes[["step", "backcopy_excess", "attn_bos_L0"]].tail(3)
"""

from workbench.toy.bigram_backcopy import BBTask, BBTaskError, oracle_risks
from workbench.toy.model import ToyConfig, ToyConfigError, ToyTransformer
from workbench.toy.probes import ablation_table, growth, growth_table, order_of_events, probe
from workbench.toy.training import (
    CPU_SETTINGS,
    PAPER_PEAK_SETTINGS,
    PAPER_SETTINGS,
    PEAK_SETTINGS,
    ResumeError,
    TrainConfig,
    TrainConfigError,
    TrainResult,
    load_run,
    peak_settings,
    settings,
    train,
    train_variants,
)

__all__ = [
    "CPU_SETTINGS",
    "PAPER_PEAK_SETTINGS",
    "PAPER_SETTINGS",
    "PEAK_SETTINGS",
    "BBTask",
    "BBTaskError",
    "ResumeError",
    "ToyConfig",
    "ToyConfigError",
    "ToyTransformer",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "ablation_table",
    "growth",
    "growth_table",
    "load_run",
    "oracle_risks",
    "order_of_events",
    "peak_settings",
    "probe",
    "settings",
    "train",
    "train_variants",
]
