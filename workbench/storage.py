"""Files on disk: the cache folder, atomic writes, content keys and checksummed caches.

The one home for plumbing that every layer needs (it imports nothing from the package
but :mod:`workbench.errors`):

- :func:`cache_root`: where converted models, activations, SAEs and stream states live;
- :func:`atomic_write` / :func:`atomic_write_text` / :func:`atomic_dir`: a reader never
  sees a half-written file or folder, and a failure leaves the old one untouched;
- :func:`content_key`: a short sha256 over strings, bytes, tensors and JSON-able settings;
- :func:`save_checked` / :func:`load_checked`: ``torch.save`` files that carry a sha256 of
  their payload, checked on load, so one flipped byte is an error, not a different result.

Example:
    >>> from workbench.storage import atomic_write_text, content_key
    >>> atomic_write_text(Path("/tmp/x.json"), "{}")
    >>> content_key("model", {"layers": [1, 2]})       # 24 hex digits
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from workbench.errors import WorkbenchError

__all__ = [
    "CorruptCacheError",
    "atomic_dir",
    "atomic_write",
    "atomic_write_text",
    "cache_root",
    "content_key",
    "file_mode",
    "load_checked",
    "save_checked",
]


class CorruptCacheError(WorkbenchError):
    """A cache file is truncated or its checksum does not match its contents."""


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``$XDG_CACHE_HOME/workbench``, else ``~/.cache/workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "workbench"


def file_mode(path: Path) -> int:
    """The mode a file written at ``path`` should get: the existing file's, else what a
    plain ``open()`` would give under the umask (``mkstemp`` alone would leave 0600, so an
    executed notebook written atomically could not be shared)."""
    try:
        return Path(path).stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(f)`` into a temporary sibling, then rename it in place.

    The data is flushed to disk before the rename; on any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target``.

    Only a folder that does not exist yet, or one this context created before, should be
    a target: an existing ``target`` is moved aside and removed only after the new one is
    in place. On error the temporary folder is removed and ``target`` is untouched.

    Example:
        >>> with atomic_dir(folder) as tmp:
        ...     save_file(tensors, tmp / "weights.safetensors")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _feed(h: Any, part: Any) -> None:
    if isinstance(part, bytes):
        h.update(b"b" + part)
    elif isinstance(part, str):
        # surrogatepass: a lone surrogate in a user's text still hashes (and differs)
        h.update(b"s" + part.encode("utf-8", "surrogatepass"))
    elif isinstance(part, torch.Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"t{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(part, list | tuple) and part and all(isinstance(p, str) for p in part):
        h.update(b"l")
        for p in part:
            h.update(hashlib.sha256(p.encode("utf-8", "surrogatepass")).digest())
    else:
        h.update(b"j" + json.dumps(part, sort_keys=True, default=repr).encode())
    h.update(b"\x00")


def content_key(*parts: Any, n: int = 24) -> str:
    """A hex sha256 (first ``n`` digits) over ``parts``: strings, bytes, tensors, lists of
    strings (documents) or anything JSON can write (settings)."""
    h = hashlib.sha256()
    for p in parts:
        _feed(h, p)
    return h.hexdigest()[:n]


_MAGIC = b"WBCACHE1"


def save_checked(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` atomically, with a sha256 of the payload in the header."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).digest()
    atomic_write(path, lambda f: f.write(_MAGIC + digest + payload))


def load_checked(path: Path, *, hint: str = "") -> Any:
    """Read a :func:`save_checked` file (``weights_only=True``), checking its sha256.

    Raises:
        CorruptCacheError: the file is truncated, not one of ours, or its bytes changed.
    """
    path = Path(path)
    data = path.read_bytes()
    todo = hint or f"Delete it (rm {path}) and run again; it will be recomputed."
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 32:
        raise CorruptCacheError(f"Cache file {path} is not a workbench cache file. {todo}")
    digest, payload = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCacheError(
            f"Cache file {path} is corrupt: its checksum does not match its contents. {todo}"
        )
    return torch.load(io.BytesIO(payload), weights_only=True)
