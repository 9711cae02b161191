"""SAEs: maths against plain-torch references, SAELens layout, training, caching, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench as wb
from tests.models import tiny
from workbench.sae import (
    SAE,
    SAEConfig,
    SAEConfigError,
    SAEMissingError,
    TrainConfig,
    cached_saes,
    evaluate_sae,
    gemma_scope_folder,
    harvest,
    load_pretrained,
    load_sae,
    residuals,
    save_sae,
    token_windows,
    train_sae,
)
from workbench.sae.activations import ActivationError

D_IN, D_SAE, K = 12, 40, 5


def _random_sae(arch: str, k: int | None = K, apply_b_dec: bool = True) -> SAE:
    sae = SAE(SAEConfig(D_IN, D_SAE, arch, k=k, apply_b_dec_to_input=apply_b_dec, hook_layer=2))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return sae


def _reference_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """Row by row, with plain Python choices: the maths written out, no shortcuts."""
    out = torch.zeros(x.shape[0], sae.cfg.d_sae)
    for r in range(x.shape[0]):
        xin = x[r] - sae.b_dec if sae.cfg.apply_b_dec_to_input else x[r]
        pre = [float(xin @ sae.W_enc[:, f] + sae.b_enc[f]) for f in range(sae.cfg.d_sae)]
        if sae.cfg.architecture == "topk":
            keep = sorted(range(len(pre)), key=lambda f: -pre[f])[: sae.cfg.k]
            for f in keep:
                out[r, f] = max(pre[f], 0.0)
        elif sae.cfg.architecture == "jumprelu":
            for f, v in enumerate(pre):
                out[r, f] = v if v > float(sae.threshold[f]) and v > 0 else 0.0
        else:
            for f, v in enumerate(pre):
                out[r, f] = max(v, 0.0)
    return out


@pytest.mark.parametrize(
    "arch,apply_b_dec", [("topk", True), ("topk", False), ("standard", True), ("jumprelu", False)]
)
def test_encode_and_decode_equal_a_reference(arch, apply_b_dec):
    sae = _random_sae(arch, K if arch == "topk" else None, apply_b_dec)
    x = torch.randn(7, D_IN)
    with torch.no_grad():
        f = sae.encode(x)
        torch.testing.assert_close(f, _reference_encode(sae, x), atol=1e-5, rtol=1e-5)
        ref_dec = torch.stack(
            [sum(f[r, j] * sae.W_dec[j] for j in range(D_SAE)) + sae.b_dec for r in range(7)]
        )
        torch.testing.assert_close(sae.decode(f), ref_dec, atol=1e-5, rtol=1e-5)
        if arch == "topk":
            assert int((f > 0).sum(-1).max()) <= K
            idx, val = sae.encode_sparse(x)
            sparse = sae.decode_sparse(idx, val)
            torch.testing.assert_close(sparse, sae.decode(f), atol=1e-5, rtol=1e-5)


def test_fold_input_scale_reads_raw_activations():
    sae = _random_sae("topk")
    x = torch.randn(9, D_IN)
    s = 3.7
    with torch.no_grad():
        f_scaled, out_scaled = sae.encode(x * s), sae(x * s)
        sae.fold_input_scale(s)
        torch.testing.assert_close(sae.encode(x), f_scaled, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae(x), out_scaled / s, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_problem():
    with pytest.raises(SAEConfigError, match="TopK SAE needs 0 < k"):
        SAEConfig(8, 16, "topk", k=None)
    with pytest.raises(SAEConfigError, match="choose one of"):
        SAEConfig(8, 16, "gated")
    with pytest.raises(SAEConfigError, match="Feature 99 is out of range"):
        _random_sae("topk").direction(99)


# -- SAELens layout -------------------------------------------------------------------------


def test_save_load_roundtrip_in_the_saelens_layout(tmp_path):
    sae = _random_sae("topk")
    folder = save_sae(sae, tmp_path / "L2")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, want in {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "architecture": "topk",
        "hook_name": "blocks.2.hook_resid_post",
        "hook_layer": 2,
        "dtype": "float32",
        "device": "cpu",
        "k": K,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
    }.items():
        assert cfg[key] == want, key
    assert cfg["activation_fn_kwargs"] == {"k": K}
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "W_enc": (D_IN, D_SAE),
        "b_enc": (D_SAE,),
        "W_dec": (D_SAE, D_IN),
        "b_dec": (D_IN,),
    }
    back = load_sae(folder)
    for name, p in sae.state_dict().items():
        assert torch.equal(back.state_dict()[name], p), name
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        assert torch.equal(back.encode(x), sae.encode(x))
    assert back.cfg.hook_layer == 2 and back.cfg.site == "resid_post"


def test_reads_a_pre_6_saelens_folder(tmp_path):
    """A flat cfg.json as older SAELens versions wrote it (ReLU 'standard' SAE)."""
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "dtype": "float32",
                "device": "cuda",
                "model_name": "tiny-stories-1L-21M",
                "hook_name": "blocks.0.hook_mlp_out",
                "hook_layer": 0,
                "activation_fn_str": "relu",
                "apply_b_dec_to_input": False,
            }
        )
    )
    sae = _random_sae("standard", None, apply_b_dec=False)
    save_file(
        {k: v.contiguous() for k, v in sae.state_dict().items()},
        str(tmp_path / "sae_weights.safetensors"),
    )
    back = load_sae(tmp_path)
    assert back.cfg.site == "mlp_out" and back.cfg.hook_layer == 0
    assert back.cfg.architecture == "standard" and not back.cfg.apply_b_dec_to_input
    x = torch.randn(3, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(back(x), sae(x))


def test_missing_sae_error_says_how_to_train_or_fetch_one(tmp_path):
    with pytest.raises(SAEMissingError) as err:
        load_sae(tmp_path / "nowhere")
    msg = str(err.value)
    assert "does not exist" in msg and "cfg.json" in msg
    assert "benchmarks.train_saes" in msg and "load_pretrained" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEMissingError, match="holds nothing"):
        load_sae(tmp_path / "empty")


def test_pretrained_without_a_hub_is_a_clear_error(monkeypatch):
    import workbench.models.hub as hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SAEMissingError, match="no model hub is reachable.*Train one offline"):
        load_pretrained("google/gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71")


def test_gemma_scope_folder_picks_the_nearest_l0():
    files = [
        "layer_20/width_16k/average_l0_14/params.npz",
        "layer_20/width_16k/average_l0_71/params.npz",
        "layer_20/width_16k/average_l0_303/params.npz",
        "layer_20/width_65k/average_l0_90/params.npz",
        "layer_2/width_16k/average_l0_100/params.npz",
    ]
    assert gemma_scope_folder(files, 20, "16k", l0=100) == "layer_20/width_16k/average_l0_71"
    assert gemma_scope_folder(files, 20, "65k") == "layer_20/width_65k/average_l0_90"
    with pytest.raises(SAEMissingError, match="no Gemma Scope SAE for layer 9"):
        gemma_scope_folder(files, 9)


# -- activations from traces ----------------------------------------------------------------


def test_token_windows_pack_documents_with_separators():
    model = tiny("GPT2LMHeadModel")  # no BOS
    tok = model.tokenizer
    docs = ["abcdef", "ghij", "klmnopqrs"]
    windows = token_windows(model, docs, length=5)
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False).input_ids + [tok.eos_token_id]
    n = len(stream) // 5
    assert windows.tolist() == [stream[5 * i : 5 * i + 5] for i in range(n)]
    with pytest.raises(ActivationError, match="fewer tokens than one window"):
        token_windows(model, ["ab"], length=50)


def test_token_windows_start_with_bos_when_the_tokenizer_adds_it():
    model = tiny("LlamaForCausalLM")
    assert model.adapter.adds_bos
    windows = token_windows(model, ["abcdefghijklmnop"], length=6, max_tokens=10)
    assert (windows[:, 0] == model.tokenizer.bos_token_id).all()
    assert windows.shape == (2, 6)  # ceil(10 / 5) windows of 5 analysed tokens


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "GPT2LMHeadModel", "Gemma2ForCausalLM"])
def test_early_stopped_residuals_equal_capture(arch):
    model = tiny(arch)
    ids = token_windows(model, ["The quick brown fox jumps over the lazy dog."] * 3, length=12)
    got = residuals(model, ids, [0, 2])
    ref = wb.capture(model, model.tokenize(ids), ["resid_post"], layers=[0, 2]).resid_post
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2], ref[1], atol=1e-5, rtol=1e-5)
    pre = residuals(model, ids, [1], site="resid_pre")[1]
    torch.testing.assert_close(pre, got[0], atol=1e-5, rtol=1e-5)  # resid_pre(1) = resid_post(0)


def test_harvest_leaves_the_sink_out_and_caches(tmp_path):
    model = tiny("LlamaForCausalLM")
    docs = ["Alpha beta gamma delta. " * 4, "Epsilon zeta eta theta. " * 4]
    store = harvest(model, docs, [1], n_tokens=60, length=10, cache_dir=tmp_path, progress=False)
    windows = token_windows(model, docs, length=10, max_tokens=60)
    ref = residuals(model, windows, [1])[1][:, 1:].reshape(-1, model.d_model)[:60]
    assert store.acts[1].shape == (60, model.d_model) and store.acts[1].dtype == torch.float16
    torch.testing.assert_close(store.acts[1].float(), ref, atol=1e-2, rtol=1e-2)
    assert torch.equal(store.token_ids, windows[:, 1:].reshape(-1)[:60])
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = harvest(model, docs, [1], n_tokens=60, length=10, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.acts[1], store.acts[1])


# -- training ---------------------------------------------------------------------------------


def _sparse_data(n: int, d: int = 16, n_atoms: int = 48, active: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=-1, keepdim=True)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 4 + 1
    return torch.einsum("na,nad->nd", coef, atoms[idx]) + 5.0  # an offset b_dec must learn


def test_training_learns_a_sparse_dictionary_and_reports_metrics():
    x = _sparse_data(6000)
    cfg = TrainConfig(d_sae=96, k=6, batch_size=256, epochs=6, lr=3e-3, log_every=10)
    sae, report = train_sae(x, cfg, layer=3, progress=False)
    assert report.fvu < 0.2, report.row()
    assert report.l0 <= 6 and report.steps == int(6 * 5400 / 256)
    assert report.history["fvu"].iloc[-1] < report.history["fvu"].iloc[0]
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    again = evaluate_sae(sae, x[:600])
    assert 0 <= again["fvu"] < 0.3 and again["dead"] <= 96


def test_evaluate_sae_equals_the_formula():
    sae = _random_sae("topk")
    x = torch.randn(50, D_IN)
    got = evaluate_sae(sae, x, batch_size=7)
    with torch.no_grad():
        f = sae.encode(x)
        fvu = float((sae.decode(f) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert got["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert got["l0"] == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert got["dead"] == int(((f > 0).sum(0) == 0).sum())


def test_outlier_rows_are_left_out_of_training():
    x = _sparse_data(2000)
    x[5] *= 1000  # one massive-activation row would dominate the variance
    cfg = TrainConfig(d_sae=64, k=6, batch_size=256, epochs=2)
    _, report = train_sae(x, cfg, layer=0, progress=False)
    assert report.outliers_dropped == 1


def test_cached_saes_train_once_then_load(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    model = tiny("LlamaForCausalLM")
    docs = ["Sing, goddess, the anger of Achilles son of Peleus. " * 6]
    cfg = TrainConfig(d_sae=32, k=4, batch_size=64, epochs=1)
    with pytest.raises(SAEMissingError, match="No trained SAE for layers"):
        cached_saes(model, docs, [1], n_tokens=200, cfg=cfg, length=16, train=False)
    saes, reports = cached_saes(model, docs, [1], n_tokens=200, cfg=cfg, length=16, progress=False)
    again, again_reports = cached_saes(
        model, docs, [1], n_tokens=200, cfg=cfg, length=16, train=False
    )
    assert torch.equal(again[1].W_enc, saes[1].W_enc)
    assert again_reports[1].fvu == pytest.approx(reports[1].fvu)
    assert again_reports[1].n_train_tokens == reports[1].n_train_tokens


def _fake_hub(monkeypatch, files: dict[str, str]):
    """Serve ``files`` ({repo path: local path}) as if from a reachable hub."""
    import huggingface_hub

    import workbench.models.hub as hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo, revision=None: list(files))
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, name, revision=None: files[name]
    )


def test_load_pretrained_reads_a_gemma_scope_params_npz(tmp_path, monkeypatch):
    import numpy as np

    sae = _random_sae("jumprelu", None, apply_b_dec=False)
    arrays = {k: v.detach().numpy() for k, v in sae.state_dict().items()}
    np.savez(tmp_path / "params.npz", **arrays)
    folder = "layer_20/width_16k/average_l0_71"
    _fake_hub(monkeypatch, {f"{folder}/params.npz": str(tmp_path / "params.npz")})
    got = load_pretrained("google/gemma-scope-2b-pt-res", folder)
    assert got.cfg.architecture == "jumprelu" and got.cfg.hook_layer == 20
    assert got.cfg.hook_name == "blocks.20.hook_resid_post" and not got.cfg.apply_b_dec_to_input
    assert got.cfg.model_name == "gemma-2-2b"
    x = torch.randn(5, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(got.encode(x), _reference_encode(sae, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(SAEMissingError, match="Folders that hold one"):
        load_pretrained("google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_1")


def test_load_pretrained_reads_a_saelens_folder_from_the_hub(tmp_path, monkeypatch):
    folder = save_sae(_random_sae("topk"), tmp_path / "blocks.2.hook_resid_post")
    _fake_hub(
        monkeypatch,
        {
            f"blocks.2.hook_resid_post/{name}": str(folder / name)
            for name in ("cfg.json", "sae_weights.safetensors")
        },
    )
    got = load_pretrained("someone/saes", "blocks.2.hook_resid_post")
    assert got.cfg.k == K and torch.equal(got.W_dec, load_sae(folder).W_dec)
