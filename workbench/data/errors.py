"""Named errors of :mod:`workbench.data`. Each message lists the accepted forms."""

from __future__ import annotations

from workbench.errors import WorkbenchError

__all__ = [
    "CorpusError",
    "CorpusFormatError",
    "CorpusNotFoundError",
    "CorpusReadError",
    "EmptyCorpusError",
    "HubCorpusError",
    "PromptSetError",
]


class CorpusError(WorkbenchError, ValueError):
    """A corpus that cannot be loaded as asked (base class of the errors below)."""


class CorpusNotFoundError(CorpusError):
    """A spec that is no built-in name, no existing file or folder, and no hub id."""


class CorpusReadError(CorpusError):
    """A file or folder that exists but cannot be read."""


class CorpusFormatError(CorpusError):
    """A file whose content is not what its suffix promises (bad JSON, a missing field)."""


class EmptyCorpusError(CorpusError):
    """A source that was read but gave no document that passed cleaning."""


class HubCorpusError(CorpusError):
    """A hub data set that cannot be streamed: ``datasets`` is missing or no hub answers."""


class PromptSetError(WorkbenchError, LookupError):
    """A prompt set that does not exist or is not valid JSON."""
