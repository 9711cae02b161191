"""``workbench run``: parameter typing, clear errors, and partial notebooks kept on failure."""

from __future__ import annotations

import ast
import json

import nbformat
import pytest

from workbench import cli
from workbench.runner import (
    CellExecutionError,
    NotebookNotFoundError,
    ParameterValueError,
    UnknownParameterError,
    coerce_parameters,
    run_notebook,
)

PARAMS = """\
n = 3
ratio = 0.5
flag = False
name = "x"
heads = [1]
model = None  # None = the embedded model
"""


def _notebook(tmp_path, *cells: str, params: str | None = PARAMS, name: str = "tiny.ipynb"):
    """A throwaway notebook: an optional parameters cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    if params is not None:
        p = nbformat.v4.new_code_cell(params)
        p.metadata["tags"] = ["parameters"]
        nb.cells.append(p)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _declared(defaults: dict[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"name": k, "default": v, "inferred_type_name": "None"} for k, v in defaults.items()}


def _stdout(nb_path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


# -- parameter typing (no kernel) -------------------------------------------------------------


def test_values_take_the_type_of_the_default():
    declared = _declared(
        {
            "n": "3",
            "ratio": "0.5",
            "flag": "False",
            "name": '"x"',
            "heads": "[1]",
            "pair": "(1, 2)",
            "opts": "{'a': 1}",
            "model": "None",
        }
    )
    got = coerce_parameters(
        declared,
        {
            "n": "12",
            "ratio": "1e-3",
            "flag": "yes",
            "name": "42",  # a str parameter keeps the text, even if it looks like a number
            "heads": "0,3",
            "pair": "[4, 5]",
            "opts": "{'b': 2}",
            "model": "tiny:LlamaForCausalLM",
        },
    )
    assert got == {
        "n": 12,
        "ratio": 0.001,
        "flag": True,
        "name": "42",
        "heads": [0, 3],
        "pair": (4, 5),
        "opts": {"b": 2},
        "model": "tiny:LlamaForCausalLM",
    }
    assert type(got["n"]) is int and type(got["ratio"]) is float


@pytest.mark.parametrize(
    ("value", "expected"),
    [("None", None), ("7", 7), ("0.25", 0.25), ("cuda", "cuda"), ("'quoted'", "quoted")],
)
def test_a_none_default_takes_a_literal_or_the_text(value, expected):
    assert coerce_parameters(_declared({"device": "None"}), {"device": value}) == {
        "device": expected
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("[0, 2]", [0, 2]), ("4", [4]), ("", []), ("code, prose", ["code", "prose"])],
)
def test_list_parameters_accept_literals_scalars_and_commas(value, expected):
    assert coerce_parameters(_declared({"xs": "[1]"}), {"xs": value}) == {"xs": expected}


def test_annotation_is_used_when_the_default_is_not_a_literal():
    declared = {"steps": {"name": "steps", "default": "int(1e3)", "inferred_type_name": "int"}}
    assert coerce_parameters(declared, {"steps": "20"}) == {"steps": 20}


def test_non_string_values_pass_through():
    assert coerce_parameters(_declared({"n": "3"}), {"n": 5.5}) == {"n": 5.5}


@pytest.mark.parametrize(
    ("name", "value", "expects"),
    [
        ("n", "ten", "expects an integer"),
        ("ratio", "half", "expects a number"),
        ("flag", "maybe", "expects true or false"),
        ("opts", "[1]", "expects a dict"),
    ],
)
def test_bad_values_are_named_with_the_default(name, value, expects):
    declared = _declared({"n": "3", "ratio": "0.5", "flag": "False", "opts": "{}"})
    with pytest.raises(ParameterValueError) as err:
        coerce_parameters(declared, {name: value})
    msg = str(err.value)
    assert f"Parameter {name!r} {expects}" in msg and repr(value) in msg and "default is" in msg


def test_unknown_parameter_lists_the_known_ones_and_suggests():
    with pytest.raises(UnknownParameterError) as err:
        coerce_parameters(_declared({"top_k": "10", "prompt": "''"}), {"topk": "3"}, "nb.ipynb")
    msg = str(err.value)
    assert "Unknown parameter 'topk' (did you mean 'top_k'?) for nb.ipynb" in msg
    assert "Its parameters are: top_k, prompt." in msg
    with pytest.raises(UnknownParameterError, match="has no cell tagged 'parameters'"):
        coerce_parameters({}, {"x": "1"}, "nb.ipynb")


# -- bad input: clear messages, partial notebooks ---------------------------------------------


def test_missing_notebook_is_a_clear_error(tmp_path):
    _notebook(tmp_path, "1", name="00_quickstart.ipynb")
    result = run_notebook(tmp_path / "00_quickstrat.ipynb", {}, out_dir=tmp_path / "out")
    assert not result.ok and isinstance(result.exception, NotebookNotFoundError)
    assert "00_quickstrat.ipynb' does not exist" in result.error
    assert "00_quickstart.ipynb" in result.error  # the near miss is suggested
    assert result.executed_path is None and "FAILED" in result.summary()
    with pytest.raises(NotebookNotFoundError):
        result.raise_for_error()


def test_unknown_parameter_stops_before_running_and_keeps_a_copy(tmp_path):
    path = _notebook(tmp_path, "print('ran')")
    result = run_notebook(path, {"nn": "1"}, out_dir=tmp_path / "out")
    assert not result.ok and isinstance(result.exception, UnknownParameterError)
    assert "did you mean 'n'?" in result.error
    copy = nbformat.read(result.executed_path, as_version=4)
    assert "Not executed by `workbench run`" in copy.cells[0].source
    assert "ran" not in _stdout(result.executed_path)
    assert "notebook (not run)" in result.summary()


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    path = _notebook(tmp_path, "1")
    code = cli.main(["run", str(path), "-p", "flag", "maybe", "--out", str(tmp_path / "o")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1
    assert "Parameter 'flag' expects true or false" in text and "Traceback" not in text
    code = cli.main(["run", str(tmp_path / "nope.ipynb"), "--out", str(tmp_path / "o")])
    text = "".join(capsys.readouterr())
    assert code == 1 and "does not exist" in text and "Traceback" not in text


# -- real runs (a kernel each) ----------------------------------------------------------------


@pytest.mark.slow
def test_run_converts_parameters_and_writes_notebook_and_html(tmp_path):
    path = _notebook(tmp_path, "print(repr((n, ratio, flag, name, heads, model)))")
    result = run_notebook(
        path,
        {"n": "5", "ratio": "2", "flag": "true", "name": "y", "heads": "2,3", "model": "None"},
        out_dir=tmp_path / "out",
        progress_bar=False,
    )
    assert result.ok, result.summary()
    printed = _stdout(result.executed_path).strip().splitlines()[-1]
    assert ast.literal_eval(printed) == (5, 2.0, True, "y", [2, 3], None)
    assert result.html_path.read_text().count("(5, 2.0, True,") >= 1
    assert result.wall_s > 0 and "ok:" in result.summary()


@pytest.mark.slow
def test_failing_cell_is_named_and_the_partial_notebook_kept(tmp_path):
    path = _notebook(
        tmp_path,
        "print('first cell ran')",
        "x = 1\nraise ValueError('the data is missing')",
        "print('never')",
    )
    result = run_notebook(path, {"n": "4"}, out_dir=tmp_path / "out", progress_bar=False)
    assert not result.ok and isinstance(result.exception, CellExecutionError)
    assert result.failed_cell == 2
    assert "cell 2 (In [" in result.error
    assert "raised ValueError: the data is missing" in result.error
    assert "the cell begins: 'x = 1'" in result.error
    assert "Traceback" not in result.error and "\x1b[" not in result.error  # no ANSI, no dump
    out = _stdout(result.executed_path)
    assert "first cell ran" in out and "never" not in out
    assert result.html_path is not None and result.html_path.is_file()
    assert "partial notebook" in result.summary()


def test_declared_parameters_include_lines_papermill_cannot_parse(tmp_path):
    from workbench.runner import declared_parameters

    path = _notebook(tmp_path, "1", params=PARAMS + "steps: int = 2  # = two\n")
    declared = declared_parameters(path)
    assert list(declared) == ["n", "ratio", "flag", "name", "heads", "model", "steps"]
    assert declared["model"]["default"] == "None"
    assert coerce_parameters(declared, {"steps": "7"}) == {"steps": 7}


@pytest.mark.slow
def test_a_cell_past_the_timeout_stops_the_run_with_a_clear_message(tmp_path):
    path = _notebook(tmp_path, "print('quick')", "import time\ntime.sleep(60)")
    result = run_notebook(path, {}, out_dir=tmp_path / "out", progress_bar=False, timeout=2)
    assert not result.ok and isinstance(result.exception, CellExecutionError)
    assert "CellTimeoutError" in result.error and "time.sleep(60)" in result.error
    assert "quick" in _stdout(result.executed_path)


def test_html_export_draws_plain_plotly_outputs_and_drops_widget_state(tmp_path):
    import plotly.graph_objects as go
    import plotly.io as pio

    from workbench.runner import export_html

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig.show()")
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"height": 333})
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"application/vnd.plotly.v1+json": json.loads(pio.to_json(fig))}
        )
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, tmp_path / "plain.ipynb")
    page = export_html(tmp_path / "plain.ipynb").read_text()
    assert page.count('class="wb-static-figure"') == 1 and "height:333px" in page
    assert page.count('class="wb-plotlyjs"') == 1  # inlined once, in the head
    assert "html-manager" not in page  # no widget manager from a CDN
