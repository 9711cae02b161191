"""Run a notebook headless with parameters (papermill), and export it to HTML.

``workbench run NOTEBOOK -p name value ... --out DIR`` calls :func:`run_notebook`.
Parameter values arrive as strings and are converted to the type of the default in the
notebook's ``parameters`` cell (``-p top_k 5`` becomes the int 5, ``-p heads 0,3`` the
list ``[0, 3]``). Bad input gets a one-paragraph message, not a library traceback:

- a notebook path that does not exist, a ``.py`` script, or a file that is not notebook JSON;
- an ``out_dir`` that names a file, or would put the executed copy over the notebook itself;
- an unknown parameter name, or a value that does not fit the parameter's type;
- a cell that raises: the message names the cell, its first line and the error.

Nothing the user has is lost:

- the executed copy is written to a temporary file and renamed to ``<out>/<name>.ipynb``
  only when every cell ran; a failed (or unrun) copy goes to ``<out>/<name>.failed.ipynb``,
  beside the last good one, never over it;
- an existing file at the output path that ``workbench run`` did not write is refused;
- two runs into the same output cannot both win: a lock file ``<out>/.<name>.lock``
  (holding the owner's pid) makes the second one stop with an error that names it.

Example:
    >>> result = run_notebook("notebooks/00_quickstart.ipynb", {"top_k": "5"}, out_dir="/tmp/r")
    >>> print(result.summary())                                        # doctest: +SKIP
    ok: notebooks/00_quickstart.ipynb ran in 38.2 s
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.storage import atomic_write_text, file_mode

__all__ = [
    "CellExecutionError",
    "NotANotebookError",
    "NotebookNotFoundError",
    "OutputBusyError",
    "OutputPathError",
    "ParameterValueError",
    "RunResult",
    "RunnerError",
    "UnknownParameterError",
    "coerce_parameters",
    "declared_parameters",
    "export_html",
    "run_notebook",
]

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


class RunnerError(WorkbenchError):
    """A notebook run that could not start or did not finish."""


class NotebookNotFoundError(RunnerError, FileNotFoundError):
    """The notebook path does not exist."""


class NotANotebookError(RunnerError, ValueError):
    """A path that exists but is not a Jupyter notebook (a script, or not notebook JSON)."""


class OutputPathError(RunnerError, ValueError):
    """An output folder or file that would overwrite the input or a file we did not write."""


class OutputBusyError(RunnerError, RuntimeError):
    """Another ``workbench run`` is writing the same output right now."""


class UnknownParameterError(RunnerError, KeyError):
    """A parameter that the notebook's ``parameters`` cell does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParameterValueError(RunnerError, ValueError):
    """A parameter value that cannot be converted to the type of its default."""


class CellExecutionError(RunnerError, RuntimeError):
    """A cell raised while the notebook ran (or the kernel died)."""


@dataclass
class RunResult:
    """What :func:`run_notebook` did.

    ``ok`` is True when every cell ran; ``error`` is then ``None``. Otherwise ``error`` is a
    readable message and ``exception`` the named error; ``executed_path`` still points to
    the partial notebook when one was written.
    """

    notebook: Path
    ok: bool
    executed_path: Path | None = None
    html_path: Path | None = None
    wall_s: float = 0.0
    error: str | None = None
    exception: RunnerError | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    failed_cell: int | None = None  # index of the failing cell in the source notebook
    ran: bool = False  # whether execution started (else executed_path is an unrun copy)
    kept_path: Path | None = None  # an earlier good copy, left untouched by a failed run

    def summary(self) -> str:
        """A few lines for a terminal: outcome, time, and where the files are."""
        head = (
            f"ok: {self.notebook} ran in {self.wall_s:.1f} s"
            if self.ok
            else f"FAILED: {self.notebook}\n  {self.error}"
        )
        lines = [head]
        if self.parameters:
            shown = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
            lines.append(f"  parameters: {shown}")
        if self.executed_path is not None:
            label = (
                "executed notebook"
                if self.ok
                else ("partial notebook" if self.ran else "notebook (not run)")
            )
            lines.append(f"  {label}: {self.executed_path}")
        if self.html_path is not None:
            lines.append(f"  html: {self.html_path}")
        if self.kept_path is not None:
            lines.append(f"  the last good executed copy is kept: {self.kept_path}")
        return "\n".join(lines)

    def raise_for_error(self) -> RunResult:
        """Raise the run's named error, if any; else return self."""
        if self.exception is not None:
            raise self.exception
        return self


# -- parameters ---------------------------------------------------------------------------------


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None


def _loose(text: str) -> Any:
    """A Python literal if ``text`` is one, else the string itself."""
    try:
        return _literal(text)
    except ValueError:
        return text


_KINDS = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "tuple": tuple}
_KINDS["dict"] = dict


def _kind_of(info: Mapping[str, Any]) -> type | None:
    """The type a parameter's value should have: its default's, else its annotation's."""
    try:
        default = _literal(str(info.get("default")))
    except ValueError:
        default = ...
    if default is not ... and default is not None:
        return type(default)
    annotated = str(info.get("inferred_type_name") or "None")
    return _KINDS.get(annotated.split("[")[0].lower())


def _convert(name: str, value: str, kind: type | None, default: str) -> Any:
    def bad(what: str) -> ParameterValueError:
        return ParameterValueError(
            f"Parameter {name!r} expects {what} (its default is {default}); got {value!r}."
        )

    text = value.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise bad("true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if kind is str:
        return value
    if kind in (list, tuple):
        if not text:
            return kind()
        try:
            parsed = _literal(text)
        except ValueError:  # "a,b" or "code": bare words, comma-separated
            parsed = tuple(_loose(part.strip()) for part in text.split(","))
        if not isinstance(parsed, list | tuple):
            parsed = (parsed,)
        return kind(parsed)
    if kind is dict:
        try:
            parsed = _literal(text)
        except ValueError:
            raise bad("a dict such as \"{'a': 1}\"") from None
        if not isinstance(parsed, dict):
            raise bad("a dict such as \"{'a': 1}\"")
        return parsed
    # default None (or an expression): a literal if it is one ("None", "3"), else the text
    return _loose(text)


def coerce_parameters(
    declared: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any], notebook: str = "notebook"
) -> dict[str, Any]:
    """Check ``params`` against a notebook's parameters and convert string values.

    Args:
        declared: ``papermill.inspect_notebook(path)`` (name -> {default, inferred_type_name}).
        params: name -> value; strings are converted to the type of the default, other
            values pass through unchanged.

    Example:
        >>> coerce_parameters({"k": {"default": "10", "inferred_type_name": "None"}}, {"k": "5"})
        {'k': 5}
    """
    unknown = [p for p in params if p not in declared]
    if unknown:
        if not declared:
            raise UnknownParameterError(
                f"{notebook} has no cell tagged 'parameters', so it takes no parameters; "
                f"got {sorted(unknown)}. Tag its first code cell 'parameters' to add some."
            )
        hints = []
        for p in unknown:
            close = difflib.get_close_matches(p, list(declared), n=1)
            hints.append(f"{p!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UnknownParameterError(
            f"Unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)} for "
            f"{notebook}. Its parameters are: {', '.join(declared)}."
        )
    out: dict[str, Any] = {}
    for name, value in params.items():
        info = declared[name]
        if isinstance(value, str):
            out[name] = _convert(name, value, _kind_of(info), str(info.get("default")))
        else:
            out[name] = value
    return out


def declared_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters of a notebook: name -> {name, default, inferred_type_name, help}.

    papermill's ``inspect_notebook`` parses the ``parameters`` cell line by line with a
    regular expression, and skips lines it cannot parse (for instance a comment holding
    ``=``). Python's own parser fills those gaps.
    """
    import nbformat
    import papermill as pm

    declared = dict(pm.inspect_notebook(str(path)))
    nb = nbformat.read(path, as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return declared
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:  # magics and the like: keep what papermill found
        return declared
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, annotation = node.targets, None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, annotation = [node.target], node.annotation
        else:
            continue
        default = ast.get_source_segment(cell.source, node.value) or "None"
        for t in targets:
            if isinstance(t, ast.Name) and t.id not in declared:
                declared[t.id] = {
                    "name": t.id,
                    "default": default,
                    "inferred_type_name": ast.unparse(annotation) if annotation else "None",
                    "help": "",
                }
    return declared


# -- running ------------------------------------------------------------------------------------

# Every notebook copy we write carries this metadata key (papermill adds "papermill" too), and
# every HTML page this comment: a file at an output path without either is not ours to replace.
_MARK = "workbench_run"
_HTML_MARK = "<!-- written by workbench run -->"


def _missing(path: Path) -> NotebookNotFoundError:
    near = []
    folder = path.parent if path.parent.is_dir() else Path("notebooks")
    if folder.is_dir():
        names = [p.name for p in sorted(folder.glob("*.ipynb"))]
        near = difflib.get_close_matches(path.name, names, n=3, cutoff=0.4) or names[:5]
    hint = f" Notebooks in {folder}/: {', '.join(near)}." if near else ""
    return NotebookNotFoundError(f"Notebook {str(path)!r} does not exist.{hint}")


def _check_notebook(path: Path) -> None:
    """Raise :class:`NotANotebookError` unless ``path`` is a readable Jupyter notebook."""
    import nbformat

    if path.suffix.lower() == ".py":
        raise NotANotebookError(
            f"{str(path)!r} is a Python script, not a notebook: `workbench run` executes "
            f".ipynb notebooks. Run the script with `python {path}`, or, if it is a jupytext "
            f"script, convert it first with `jupytext --to ipynb {path}`."
        )
    try:
        nbformat.read(path, as_version=4)
    except Exception as exc:  # NotJSONError, a JSON that is no notebook, bad encoding...
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise NotANotebookError(
            f"{str(path)!r} is not a Jupyter notebook: it could not be read as notebook "
            f"JSON ({type(exc).__name__}: {first}). Give the path of a .ipynb file saved by "
            "Jupyter."
        ) from None


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a notebook or page that ``workbench run`` (or papermill) wrote."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix.lower() == ".html":
        # our pages carry the mark; earlier ones are nbconvert exports of executed copies
        return _HTML_MARK in text or "jp-Notebook" in text
    try:
        meta = json.loads(text).get("metadata")
    except (ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and ("papermill" in meta or _MARK in meta)


@dataclass
class _Outputs:
    folder: Path
    good: Path  # <out>/<name>.ipynb: written only when every cell ran
    failed: Path  # <out>/<stem>.failed.ipynb: a partial or unrun copy
    html: Path
    failed_html: Path


def _outputs(nb_path: Path, out: Path, html: bool) -> _Outputs:
    """The output paths for ``nb_path`` in ``out``, or :class:`OutputPathError`."""
    if out.exists() and not out.is_dir():
        raise OutputPathError(
            f"--out {str(out)!r} is a file, but --out names a folder: the executed copy is "
            f"written to <folder>/{nb_path.name}. Choose a folder, e.g. --out results."
        )
    if not out.exists() and out.suffix.lower() in (".ipynb", ".html", ".py"):
        raise OutputPathError(
            f"--out {str(out)!r} looks like a file name, but --out names a folder: the "
            f"executed copy is written to <folder>/{nb_path.name}. Give a folder, e.g. "
            f"--out {out.parent / 'results'}."
        )
    stem = nb_path.stem
    outs = _Outputs(
        folder=out,
        good=out / nb_path.name,
        failed=out / f"{stem}.failed.ipynb",
        html=out / f"{stem}.html",
        failed_html=out / f"{stem}.failed.html",
    )
    src = nb_path.resolve()
    for dest in (outs.good, outs.failed):
        if dest.resolve() == src or (dest.exists() and os.path.samefile(dest, src)):
            raise OutputPathError(
                f"The executed copy would be written to {str(dest)!r}, which is the notebook "
                f"{str(nb_path)!r} itself, and would replace it. Choose another --out folder, "
                f"e.g. --out {nb_path.parent / 'executed'}."
            )
    for dest in (outs.good, outs.failed) + ((outs.html, outs.failed_html) if html else ()):
        if dest.exists() and (not dest.is_file() or not _is_ours(dest)):
            raise OutputPathError(
                f"{str(dest)!r} exists and was not written by `workbench run`, so it is not "
                "replaced. Move or rename it, or choose another --out folder."
            )
    return outs


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _output_lock(folder: Path, name: str) -> Iterator[Path]:
    """Hold ``<folder>/.<name>.lock`` (created exclusively, holding our pid) while writing.

    A lock left by a process that no longer runs (killed) is taken over; any other
    existing lock raises :class:`OutputBusyError` naming it.
    """
    lock = folder / f".{name}.lock"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pid = _lock_owner(lock)
            if attempt == 0 and pid is not None and pid != os.getpid() and not _alive(pid):
                log.warning("Taking over %s: its process %d no longer runs.", lock, pid)
                lock.unlink(missing_ok=True)
                continue
            owner = f"process {pid}" if pid is not None else "another process"
            raise OutputBusyError(
                f"Another `workbench run` ({owner}) is writing {str(folder / name)!r} right "
                f"now; its lock file is {str(lock)!r}. Wait for it to finish, or use another "
                f"--out folder. If no such run is going on, delete the lock file."
            ) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield lock
    finally:
        if _lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _write_unrun(src: Path, dest: Path, message: str) -> Path:
    """Copy the notebook to ``dest`` with a note at the top saying why it did not run."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    note = nbformat.v4.new_markdown_cell(f"**Not executed by `workbench run`:** {message}")
    note.metadata["tags"] = ["papermill-error-cell-tag"]  # papermill removes it on the next run
    nb.cells.insert(0, note)
    nb.metadata[_MARK] = {"ran": False}
    atomic_write_text(dest, nbformat.writes(nb))
    return dest


def _source_cell(nb_path: Path, source: str) -> int | None:
    """Index of the cell with ``source`` in the source notebook (papermill adds cells)."""
    import nbformat

    for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
        if cell.cell_type == "code" and cell.source == source:
            return i
    return None


def _cell_error(exc: Any, nb_path: Path) -> tuple[str, int | None]:
    """A message naming the failing cell, from papermill's ``PapermillExecutionError``."""
    index = _source_cell(nb_path, exc.source)
    first = next((ln for ln in exc.source.splitlines() if ln.strip()), "").strip()
    where = (
        f"cell {index} (In [{exc.exec_count}])"
        if index is not None
        else f"the injected-parameters cell (In [{exc.exec_count}])"
    )
    evalue = str(exc.evalue).strip().splitlines()
    msg = (
        f"{where} raised {exc.ename}: {evalue[0] if evalue else ''}".rstrip()
        + f"\n  the cell begins: {first[:100]!r}"
        + "\n  (the full traceback is in the cell's output in the partial notebook)"
    )
    return msg, index


def run_notebook(
    path: str | Path,
    params: Mapping[str, Any] | None = None,
    out_dir: str | Path = "results",
    html: bool = True,
    *,
    kernel_name: str | None = None,
    progress_bar: bool = True,
    timeout: float | None = None,
    cwd: str | Path | None = None,
) -> RunResult:
    """Execute the notebook at ``path`` with papermill and write the results to ``out_dir``.

    Args:
        params: parameter name -> value (strings are converted to the defaults' types).
        out_dir: a folder. It gets ``<name>.ipynb`` (executed) and, with ``html``,
            ``<name>.html`` when every cell ran; otherwise ``<name>.failed.ipynb`` (and
            ``.failed.html``), and an earlier good copy stays as it was.
        kernel_name: the Jupyter kernel (default: the one the notebook names).
        timeout: seconds a single cell may run (default: no limit).
        cwd: the kernel's working directory (default: the notebook's folder, as in Jupyter).

    Returns a :class:`RunResult`; it never raises for bad input or a failing cell.

    Example:
        >>> run_notebook("notebooks/00_quickstart.ipynb", {"prompt": "Hello"}).ok  # doctest: +SKIP
        True
    """
    nb_path = Path(path)
    result = RunResult(notebook=nb_path, ok=False)

    def fail(exc: RunnerError) -> RunResult:
        result.error, result.exception = str(exc), exc
        return result

    if nb_path.is_dir():
        names = ", ".join(p.name for p in sorted(nb_path.glob("*.ipynb"))[:5])
        return fail(
            NotANotebookError(
                f"{str(nb_path)!r} is a folder; give one notebook file in it"
                + (f" (such as {names})." if names else ".")
            )
        )
    if not nb_path.is_file():
        return fail(_missing(nb_path))
    try:
        _check_notebook(nb_path)
        outs = _outputs(nb_path, Path(out_dir), html)
        outs.folder.mkdir(parents=True, exist_ok=True)
        lock = _output_lock(outs.folder, nb_path.name)
        lock.__enter__()
    except RunnerError as exc:
        return fail(exc)
    try:
        _run_locked(
            nb_path,
            dict(params or {}),
            outs,
            html,
            result,
            fail,
            kernel_name=kernel_name,
            progress_bar=progress_bar,
            timeout=timeout,
            cwd=cwd,
        )
    finally:
        lock.__exit__(None, None, None)
    return result


def _run_locked(
    nb_path: Path,
    params: dict[str, Any],
    outs: _Outputs,
    html: bool,
    result: RunResult,
    fail: Any,
    **kw: Any,
) -> None:
    import papermill as pm

    if outs.good.is_file():
        result.kept_path = outs.good  # reported only if this run fails
    try:
        declared = declared_parameters(nb_path)
        result.parameters = coerce_parameters(declared, params, notebook=str(nb_path))
    except RunnerError as exc:
        result.executed_path = _write_unrun(nb_path, outs.failed, str(exc))
        fail(exc)
        return

    engine_kwargs: dict[str, Any] = {"store_widget_state": False}  # see export_html
    if kw["timeout"] is not None:
        engine_kwargs["execution_timeout"] = kw["timeout"]
    # papermill writes the output as it goes: into a temporary file, renamed when done
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{nb_path.stem}.", suffix=".running.ipynb", dir=outs.folder
    )
    os.close(fd)
    tmp = Path(tmp_name)
    cwd = kw["cwd"]
    t0 = time.perf_counter()
    result.ran = True
    try:
        try:
            pm.execute_notebook(
                str(nb_path),
                str(tmp),
                parameters=result.parameters,
                kernel_name=kw["kernel_name"],
                progress_bar=kw["progress_bar"],
                cwd=str(Path(cwd) if cwd is not None else nb_path.resolve().parent),
                **engine_kwargs,
            )
            result.ok = True
        except pm.PapermillExecutionError as exc:
            msg, result.failed_cell = _cell_error(exc, nb_path)
            fail(CellExecutionError(msg))
        except Exception as exc:  # kernel missing or dead, timeout: still keep what ran
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            fail(
                CellExecutionError(f"the run stopped: {type(exc).__name__}: " + "\n  ".join(lines))
            )
        result.wall_s = time.perf_counter() - t0
        if tmp.is_file() and tmp.stat().st_size > 0:
            _mark(tmp)
            dest = outs.good if result.ok else outs.failed
            os.chmod(tmp, file_mode(dest))
            os.replace(tmp, dest)
            result.executed_path = dest
        else:
            result.ok = False
            result.executed_path = _write_unrun(nb_path, outs.failed, result.error or "")
    finally:
        tmp.unlink(missing_ok=True)
    if result.ok:
        result.kept_path = None
        for stale in (outs.failed, outs.failed_html):  # an earlier failure, now superseded
            if stale.is_file() and _is_ours(stale):
                stale.unlink()
    if html and result.executed_path is not None:
        page = outs.html if result.ok else outs.failed_html
        try:
            result.html_path = export_html(result.executed_path, page)
        except Exception as exc:  # the notebook itself is safe on disk; say what went wrong
            log.warning("HTML export of %s failed: %s", result.executed_path, exc)
            if result.ok:
                result.ok = False
                fail(RunnerError(f"the notebook ran, but its HTML export failed: {exc}"))


def _mark(path: Path) -> None:
    """Add our metadata key to a notebook papermill wrote, so a later run may replace it."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        nb.setdefault("metadata", {})[_MARK] = {"ran": True}
        atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    except (OSError, ValueError, AttributeError) as exc:  # papermill's own key still marks it
        log.warning("Could not mark %s as written by workbench run: %s", path, exc)


def export_html(notebook: str | Path, dest: str | Path | None = None) -> Path:
    """Export an executed notebook to a self-contained HTML page; return its path.

    ``dest`` defaults to the notebook's path with ``.html``; a folder gets ``<stem>.html``.
    A file there that workbench did not write is never replaced (:class:`OutputPathError`).
    This is ``workbench export``: run a notebook in JupyterLab, save it, then share the page.

    The page makes no network request (see :func:`workbench.widgets.export.notebook_page`):
    every live view falls back to its static copy, progress bars show their final state,
    math renders without MathJax, and plotly.js is inlined once (compressed, about 2 MB).
    """
    import nbformat

    from workbench.widgets.export import notebook_page

    src = Path(notebook)
    if not src.is_file():
        raise _missing(src)
    _check_notebook(src)
    dest = Path(dest) if dest is not None else src.with_suffix(".html")
    if dest.is_dir():
        dest = dest / f"{src.stem}.html"
    if dest.exists() and (not dest.is_file() or not _is_ours(dest)):
        raise OutputPathError(
            f"{str(dest)!r} exists and was not written by workbench, so it is not replaced. "
            "Move or rename it, or give another --out."
        )
    page = notebook_page(nbformat.read(src, as_version=4), name=src.stem)
    atomic_write_text(dest, page + "\n" + _HTML_MARK + "\n")
    return dest
