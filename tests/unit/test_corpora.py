"""Corpora from anywhere: built-in names, .txt, .jsonl, .json, folders, hub ids, dicts, lists.

Every form is checked on small temporary files, with its errors; the built-in corpora are
checked against a plain re-implementation of the loader they had before specs existed.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import sys
import sysconfig
import types
from pathlib import Path

import pytest

from workbench.data import (
    ACCEPTED_SPECS,
    CorpusError,
    CorpusFormatError,
    CorpusNotFoundError,
    CorpusReadError,
    EmptyCorpusError,
    HubCorpusError,
    clean_documents,
    clean_text,
    code_corpus,
    interleave,
    load_corpora,
    load_corpus,
    prose_corpus,
)
from workbench.data.corpora import LICENSE_DIR
from workbench.errors import WorkbenchError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LONG = "x" * 250  # passes the default min_chars=200


def _doc(i: int) -> str:
    return f"Document {i}. " + "word " * 60


# -- the built-in corpora are what they always were ----------------------------------------


def _reference(domain: str, max_docs: int | None, seed: int) -> list[str]:
    """The loader as it was before specs: read, keep >= 200 chars and non-blank, sample."""
    if domain == "code":
        root = Path(sysconfig.get_paths()["stdlib"])
        texts = [
            p.read_text(encoding="utf-8")
            for p in sorted(root.glob("*.py"))
            if p.is_file() and not p.name.startswith("_")
        ]
    else:
        from pydoc_data.topics import topics

        texts = [topics[k] for k in sorted(topics)]
        if LICENSE_DIR.is_dir():
            for p in sorted(LICENSE_DIR.iterdir()):
                if p.is_file() and not p.is_symlink():
                    try:
                        texts.append(p.read_text(encoding="utf-8"))
                    except UnicodeDecodeError:
                        continue
    docs = [t for t in texts if len(t) >= 200 and t.strip()]
    if max_docs is not None and max_docs < len(docs):
        docs = random.Random(seed).sample(docs, max_docs)
    return docs


@pytest.mark.parametrize(
    "domain,max_docs,seed",
    [("code", None, 0), ("prose", None, 0), ("code", 8, 0), ("prose", 3, 1), ("prose", 8, 2)],
)
def test_builtin_corpora_are_unchanged(domain, max_docs, seed):
    assert load_corpus(domain, max_docs=max_docs, seed=seed) == _reference(domain, max_docs, seed)


def test_builtin_helpers_match_load_corpus():
    assert code_corpus(4, seed=3) == load_corpus("code", max_docs=4, seed=3)
    assert prose_corpus(4) == load_corpus("prose", max_docs=4)


def test_interleave_of_the_builtins_is_notebook_01s_corpus():
    docs = load_corpora({"prose": "prose", "code": "code"})
    prose, code = list(docs["prose"]), list(docs["code"])
    rng = random.Random(0)  # function_tokens.corpus(): one generator, prose then code
    rng.shuffle(prose)
    rng.shuffle(code)
    expected = []
    for i in range(max(len(prose), len(code))):
        expected.extend(d[i] for d in (prose, code) if i < len(d))
    assert interleave(docs) == expected
    ft = pytest.importorskip("workbench.analysis.function_tokens")
    assert interleave(docs) == ft.corpus()


def test_interleave_keeps_every_domain_in_each_prefix():
    out = interleave({"a": ["a1", "a2", "a3"], "b": ["b1"], "c": []}, seed=5)
    assert sorted(out) == ["a1", "a2", "a3", "b1"] and "b1" in out[:2]
    assert interleave({}) == []


# -- cleaning ------------------------------------------------------------------------------


def test_clean_text_normalises_line_ends_surrogates_nul_and_bom():
    assert clean_text("\ufeffa\r\nb\rc\ud800d\x00e") == "a\nb\nc\ufffdde"
    code = "def f():\n\tif x:\n        return 1\n"  # indentation is kept
    assert clean_text(code) == code


def test_clean_documents_drops_blank_and_short_documents():
    assert clean_documents([" \n\t", "short", "long enough\r\n"], min_chars=6) == ["long enough\n"]
    assert clean_documents(["", "a"], min_chars=0) == ["a"]


# -- .txt ----------------------------------------------------------------------------------


def test_txt_gives_one_document_per_blank_line_separated_block(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"first\nstill first\n\n  \n\nsecond\r\n\r\nthird\n")
    assert load_corpus(path, min_chars=1) == ["first\nstill first", "second", "third\n"]
    assert load_corpus(str(path), min_chars=7) == ["first\nstill first"]


def test_txt_with_invalid_utf8_is_decoded_with_replacement(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"caf\xe9 " + LONG.encode())
    [doc] = load_corpus(path)
    assert doc.startswith("caf\ufffd ")


def test_gzipped_files_are_read(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps({"text": LONG}).encode() + b"\n"))
    assert load_corpus(path) == [LONG]


# -- .jsonl --------------------------------------------------------------------------------


def test_jsonl_reads_the_text_field_strings_and_skips_nulls(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [{"text": _doc(0), "id": 1}, {"text": None}, _doc(1), {"text": _doc(2)}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert load_corpus(path) == [_doc(0), _doc(1), _doc(2)]


def test_jsonl_reads_a_named_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": _doc(0), "title": "t"}) + "\n")
    assert load_corpus(path, field="body") == [_doc(0)]
    assert load_corpus({"source": str(path), "field": "body"}) == [_doc(0)]


def test_jsonl_missing_field_names_the_line_and_the_fields_found(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": _doc(0)}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(CorpusFormatError, match=r"line 2.*no field 'text'.*'body'"):
        load_corpus(path)


def test_jsonl_bad_line_and_non_text_values_are_format_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(CorpusFormatError, match="line 2, is not JSON"):
        load_corpus(path)
    path.write_text('{"text": 3}\n')
    with pytest.raises(CorpusFormatError, match="holds int, not text"):
        load_corpus(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(CorpusFormatError, match="is list; expected a string or an object"):
        load_corpus(path)


def test_json_escaped_lone_surrogates_are_cleaned(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a\\ud800b' + "x" * 250 + '"}\n')
    [doc] = load_corpus(path)
    assert doc.startswith("a\ufffdb")
    doc.encode("utf-8")  # encodable: a tokenizer will not choke on it


# -- .json ---------------------------------------------------------------------------------


def test_json_list_of_strings_or_of_objects(tmp_path):
    strings, objects = tmp_path / "s.json", tmp_path / "o.json"
    strings.write_text(json.dumps([_doc(0), _doc(1)]))
    objects.write_text(json.dumps([{"content": _doc(0)}, {"content": _doc(1)}]))
    assert load_corpus(strings) == [_doc(0), _doc(1)]
    assert load_corpus(objects, field="content") == [_doc(0), _doc(1)]


def test_json_that_is_not_a_list_or_not_json_is_a_format_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"documents": [_doc(0)]}))
    with pytest.raises(CorpusFormatError, match=r"JSON dict with keys \['documents'\]"):
        load_corpus(path)
    path.write_text("[1,")
    with pytest.raises(CorpusFormatError, match="not valid JSON"):
        load_corpus(path)


# -- folders -------------------------------------------------------------------------------


def test_folder_gives_one_document_per_file_sorted_recursive(tmp_path):
    (tmp_path / "b.txt").write_text(_doc(1))
    (tmp_path / "a.py").write_text(_doc(0))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text(_doc(2) + "\n\n" + _doc(3))  # one file, one doc
    (tmp_path / ".hidden").write_text(_doc(9))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text(_doc(9))
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\x00\x00" + b"x" * 300)
    assert load_corpus(tmp_path) == [_doc(0), _doc(1), _doc(2) + "\n\n" + _doc(3)]


def test_empty_folder_is_an_empty_corpus(tmp_path):
    with pytest.raises(EmptyCorpusError, match="0 read"):
        load_corpus(tmp_path)


# -- sampling and empty results ------------------------------------------------------------


def test_max_docs_samples_with_the_seed(tmp_path):
    path = tmp_path / "c.json"
    docs = [_doc(i) for i in range(20)]
    path.write_text(json.dumps(docs))
    a, b = load_corpus(path, max_docs=5, seed=1), load_corpus(path, max_docs=5, seed=1)
    assert a == b and len(a) == 5 and set(a) <= set(docs)
    assert load_corpus(path, max_docs=5, seed=2) != a
    assert load_corpus(path, max_docs=50) == docs


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_max_docs_is_an_error(tmp_path, bad):
    with pytest.raises(CorpusError, match="max_docs"):
        load_corpus("code", max_docs=bad)


def test_all_documents_too_short_says_so_and_how_to_keep_them(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("one\n\ntwo\n")
    with pytest.raises(EmptyCorpusError, match=r"2 read, 0 blank, 2 shorter than min_chars=200"):
        load_corpus(path)
    assert load_corpus(path, min_chars=1) == ["one", "two\n"]


def test_empty_file_is_an_empty_corpus(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(EmptyCorpusError):
        load_corpus(path)


# -- lists, dicts, strings -----------------------------------------------------------------


def test_a_list_of_documents_is_cleaned_like_any_source():
    assert load_corpus([_doc(0) + "\r\n", "  ", "short"]) == [_doc(0) + "\n"]
    with pytest.raises(CorpusFormatError, match="item 1 is int"):
        load_corpus([_doc(0), 3])
    with pytest.raises(EmptyCorpusError):
        load_corpus([])


def test_dict_spec_overrides_keywords_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([_doc(i) for i in range(10)]))
    assert len(load_corpus({"source": str(path), "max_docs": 3}, max_docs=8)) == 3
    with pytest.raises(CorpusError, match="takes only"):
        load_corpus({"source": str(path), "fields": "text"})
    with pytest.raises(CorpusError, match="needs 'source'"):
        load_corpus({"field": "text"})


def test_a_bare_text_string_is_not_taken_for_a_spec():
    with pytest.raises(CorpusNotFoundError, match=r"looks like text.*load_corpus\(\[text\]\)"):
        load_corpus("The cat sat on the mat. It was a sunny day.")


def test_a_missing_file_lists_where_it_looked_and_the_accepted_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusNotFoundError) as err:
        load_corpus("my/wiki.jsonl")
    assert str(tmp_path / "my" / "wiki.jsonl") in str(err.value)
    assert ACCEPTED_SPECS in str(err.value)
    with pytest.raises(CorpusNotFoundError):
        load_corpus(tmp_path / "nothing")


def test_unknown_suffix_and_unreadable_files_are_named(tmp_path):
    odd = tmp_path / "c.csv"
    odd.write_text("a,b\n")
    with pytest.raises(CorpusFormatError, match=r"suffix '\.csv'"):
        load_corpus(odd)
    broken = tmp_path / "c.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusReadError, match="c.txt.gz"):
        load_corpus(broken)


def test_relative_paths_are_found_from_where_workbench_run_started(tmp_path, monkeypatch):
    (tmp_path / "mine.json").write_text(json.dumps([_doc(0)]))
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the kernel runs in the notebook's folder
    monkeypatch.setenv("WORKBENCH_RUN_CWD", str(tmp_path))
    assert load_corpus("mine.json") == [_doc(0)]


def test_corpus_errors_are_workbench_errors_and_value_errors():
    for cls in (CorpusNotFoundError, CorpusReadError, CorpusFormatError, EmptyCorpusError):
        assert issubclass(cls, CorpusError) and issubclass(cls, WorkbenchError)
    assert issubclass(HubCorpusError, ValueError)


# -- hub data sets -------------------------------------------------------------------------


def test_hub_id_without_datasets_installed_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(HubCorpusError) as err:
        load_corpus("wiki")
    message = str(err.value)
    assert "'wiki' is not a built-in name (code, prose)" in message
    assert "pip install datasets" in message and ACCEPTED_SPECS in message


def _fake_datasets(records, calls, error=None):
    def load_dataset(name, config=None, *, split, streaming):
        calls.append((name, config, split, streaming))
        if error is not None:
            raise error
        return iter(records)

    return types.SimpleNamespace(load_dataset=load_dataset)


def test_hub_data_set_is_streamed_cleaned_and_cut_at_max_docs(monkeypatch):
    records = [{"text": "short"}, {"text": _doc(0) + "\r\n"}, {"text": None}]
    records += [{"text": _doc(i)} for i in range(1, 10)]
    calls: list = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(records, calls))
    docs = load_corpus("Salesforce/wikitext:wikitext-2-raw-v1", max_docs=3)
    assert docs == [_doc(0) + "\n", _doc(1), _doc(2)]
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", "train", True)]
    spec = {"source": "org/set", "config": "en", "split": "validation", "field": "text"}
    load_corpus(spec, max_docs=1)
    assert calls[-1] == ("org/set", "en", "validation", True)


def test_hub_that_cannot_be_reached_is_a_hub_error(monkeypatch):
    fake = _fake_datasets([], [], error=ConnectionError("offline"))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(HubCorpusError, match=r"ConnectionError: offline.*reachable"):
        load_corpus("org/set", max_docs=2)


def test_hub_record_without_the_field_is_a_format_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets([{"content": LONG}], []))
    with pytest.raises(CorpusFormatError, match=r"record 0, has no field 'text'.*'content'"):
        load_corpus("org/set", max_docs=2)
    assert load_corpus("org/set", max_docs=2, field="content") == [LONG]


# -- load_corpora --------------------------------------------------------------------------


def test_load_corpora_keeps_the_mapping_order_and_per_domain_specs(tmp_path):
    path = tmp_path / "wiki.jsonl"
    path.write_text("\n".join(json.dumps({"body": _doc(i)}) for i in range(6)))
    spec = {"source": str(path), "field": "body"}
    docs = load_corpora({"wiki": spec, "code": "code"}, max_docs=4)
    assert list(docs) == ["wiki", "code"]
    assert len(docs["wiki"]) == 4 and docs["code"] == load_corpus("code", max_docs=4)


def test_load_corpora_names_the_domain_that_failed(tmp_path):
    with pytest.raises(CorpusNotFoundError, match=r"^Domain 'wiki': No file or folder"):
        load_corpora({"code": "code", "wiki": str(tmp_path / "missing.jsonl")})


@pytest.mark.parametrize("bad", ["code", {}, ["code"]])
def test_load_corpora_wants_a_non_empty_mapping(bad):
    with pytest.raises(CorpusError, match="non-empty mapping from domain name"):
        load_corpora(bad)


# -- the notebooks take a corpora parameter ------------------------------------------------


@pytest.mark.parametrize(
    "notebook,default",
    [
        ("01_function_tokens", {"prose": "prose", "code": "code"}),
        ("02_active_dormant_heads", {"code": "code", "prose": "prose"}),
        ("04_information_flow_routes", {"code": "code", "prose": "prose"}),
    ],
)
def test_notebooks_declare_corpora_and_the_runner_parses_json_for_it(notebook, default):
    from workbench.runner import coerce_parameters, declared_parameters

    path = NOTEBOOKS / f"{notebook}.ipynb"
    declared = declared_parameters(path)
    assert "corpora" in declared, f"{path.name} has no corpora parameter"
    assert ast.literal_eval(declared["corpora"]["default"]) == default  # today's corpora
    given = '{"wiki": "my/wiki.jsonl", "code": "code"}'
    parsed = coerce_parameters(declared, {"corpora": given}, path.name)["corpora"]
    assert parsed == {"wiki": "my/wiki.jsonl", "code": "code"}
