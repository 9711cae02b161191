"""Named exceptions. Each message says what was expected, what arrived, and what to do."""

from __future__ import annotations

__all__ = [
    "WorkbenchError",
    "ModelNotFoundError",
    "UnsupportedArchitectureError",
    "EmbeddedModelMissingError",
    "GGUFSupportMissingError",
    "EmptyPromptError",
    "PromptTooLongError",
    "PromptTypeError",
    "LayerIndexError",
    "HeadIndexError",
    "SelfTestError",
    "InterventionError",
    "DeviceUnavailableError",
    "DtypeError",
    "ModelFileError",
    "TokenIdError",
    "InvalidArgumentError",
]


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ModelNotFoundError(WorkbenchError, OSError):
    """A model id that is neither a local path nor reachable on a hub."""


class UnsupportedArchitectureError(WorkbenchError, ValueError):
    """The model's HF architecture class has no adapter."""


class EmbeddedModelMissingError(WorkbenchError, ImportError):
    """The package that ships the embedded model's weights is not installed."""


class GGUFSupportMissingError(WorkbenchError, ImportError):
    """A GGUF file was given but the ``gguf`` package is not installed."""


class EmptyPromptError(WorkbenchError, ValueError):
    """A prompt with no tokens."""


class PromptTooLongError(WorkbenchError, ValueError):
    """A prompt longer than the model's context window."""


class PromptTypeError(WorkbenchError, TypeError):
    """A prompt that is neither a string, a list of strings, nor a tensor of token ids."""


class LayerIndexError(WorkbenchError, IndexError):
    """A layer index outside ``range(n_layers)``."""


class HeadIndexError(WorkbenchError, IndexError):
    """A head index outside ``range(n_heads)``."""


class SelfTestError(WorkbenchError, RuntimeError):
    """The load-time self-test found that an operation the adapter relies on is wrong."""


class InterventionError(WorkbenchError, ValueError):
    """An intervention that cannot be applied as specified."""


class DeviceUnavailableError(WorkbenchError, ValueError):
    """A device that is unknown, or that this machine does not have (``"cuda"`` without CUDA)."""


class DtypeError(WorkbenchError, ValueError):
    """A dtype that is not one of the floating-point types a model can be loaded in."""


class ModelFileError(ModelNotFoundError):
    """A model path that exists but holds no loadable model (no config.json, a broken .gguf)."""


class TokenIdError(WorkbenchError, ValueError):
    """Token ids that are not integers, or lie outside ``range(vocabulary size)``."""


class InvalidArgumentError(WorkbenchError, ValueError):
    """An argument outside the values it can take (``max_length=0``, ``-k 0``)."""
