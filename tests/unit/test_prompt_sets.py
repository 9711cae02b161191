"""Prompt sets: ``data/`` (edited in a checkout) and ``workbench/data/`` (shipped) agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.data import PromptSetError, prompt_set, prompt_set_path, prompt_sets
from workbench.data import prompts as prompts_module

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT, PACKAGED = ROOT / "data", ROOT / "workbench" / "data"


def _set_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".json", ".jsonl")}


def test_data_folder_and_package_data_hold_the_same_files():
    checkout, packaged = _set_files(CHECKOUT), _set_files(PACKAGED)
    assert sorted(checkout) == sorted(packaged), "data/ and workbench/data/ list different sets"
    differ = [name for name in checkout if checkout[name] != packaged[name]]
    assert not differ, f"{differ} differ: copy data/<file> to workbench/data/<file>"


def test_the_project_sets_are_listed_and_read_from_the_checkout():
    assert {"ioi", "function_token_pairs"} <= set(prompt_sets())
    assert Path(str(prompt_set_path("ioi"))) == CHECKOUT / "ioi.json"


def test_ioi_set_has_templates_names_and_the_circuit():
    ioi = prompt_set("ioi")
    assert all("{IO}" in t and "{S}" in t for t in ioi["templates"])
    assert len(set(ioi["names"])) == len(ioi["names"]) >= 2
    assert {"name mover", "s-inhibition", "induction"} <= set(ioi["circuit"])


def test_function_token_pairs_differ_in_content_and_end_alike():
    pairs = prompt_set("function_token_pairs")["pairs"]
    assert pairs[0] == {
        "name": "capital",
        "a": "Q: What is the capital of Russia?\nA:",
        "b": "Q: What is the capital of the UK?\nA:",
    }
    assert len({p["name"] for p in pairs}) == len(pairs)
    for p in pairs:
        assert p["a"] != p["b"] and p["a"].endswith("\nA:") and p["b"].endswith("\nA:")


def test_package_data_is_the_fallback_outside_a_checkout(monkeypatch):
    from_checkout = prompt_set("ioi")
    monkeypatch.setattr(prompts_module, "checkout_data_dir", lambda: None)
    assert str(prompt_set_path("ioi")).startswith(str(PACKAGED))
    assert prompt_set("ioi") == from_checkout


def test_an_edited_data_folder_wins(tmp_path, monkeypatch):
    edited = {"pairs": [{"name": "mine", "a": "A?", "b": "B?"}]}
    (tmp_path / "function_token_pairs.json").write_text(json.dumps(edited))
    (tmp_path / "extra.jsonl").write_text('{"prompt": "x"}\n\n{"prompt": "y"}\n')
    monkeypatch.setattr(prompts_module, "checkout_data_dir", lambda: tmp_path)
    assert prompt_set("function_token_pairs") == edited
    assert prompt_set("extra") == [{"prompt": "x"}, {"prompt": "y"}]
    assert "extra" in prompt_sets() and "ioi" in prompt_sets()  # ioi from the package


def test_a_file_path_is_a_prompt_set(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('["one", "two"]')
    assert prompt_set(path) == ["one", "two"] == prompt_set(str(path))


def test_each_call_returns_a_fresh_copy():
    prompt_set("ioi")["names"].append("Zed")
    assert "Zed" not in prompt_set("ioi")["names"]


def test_unknown_missing_and_broken_sets_are_named_errors(tmp_path, monkeypatch):
    with pytest.raises(PromptSetError, match=r"Unknown prompt set 'nope'.*ioi"):
        prompt_set("nope")
    with pytest.raises(PromptSetError, match="No prompt-set file"):
        prompt_set(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    monkeypatch.setattr(prompts_module, "checkout_data_dir", lambda: tmp_path)
    with pytest.raises(PromptSetError, match="not valid JSON"):
        prompt_set("broken")
