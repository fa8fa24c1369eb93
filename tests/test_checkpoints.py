"""Loading experiments in the release's layout, with the release's own configs."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nphm.checkpoints import (
    available_epochs,
    load_expression,
    load_identity,
    save_checkpoint,
    save_config,
)
from nphm.models import NPHMDeformation, NPHMIdentity, NPMDeformation, NPMIdentity
from test_models import OFFICIAL_SHAPES, random_state

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def official_experiment(tmp_path, name, config, shapes, epoch, n_lat, lat_dim, mode=None):
    exp = tmp_path / name
    (exp / "checkpoints").mkdir(parents=True)
    shutil.copy(CONFIGS / config, exp / "configs.yaml")
    if mode is not None:  # the release's stage-2 trainer writes the mode into the config
        import yaml

        cfg = yaml.safe_load((exp / "configs.yaml").read_text())
        cfg["ex_decoder"]["mode"] = mode
        (exp / "configs.yaml").write_text(yaml.safe_dump(cfg))
    state = random_state(shapes)
    ckpt = {
        "epoch": epoch,
        "decoder_state_dict": state,
        "optimizer_encoder_state_dict": {},
        "optimizer_lat_state_dict": {},
        "optimizer_lat_val_state_dict": {},
        "latent_codes_state_dict": {"weight": torch.randn(n_lat, lat_dim)},
        "latent_codes_val_state_dict": {"weight": torch.randn(3, lat_dim)},
    }
    torch.save(ckpt, exp / "checkpoints" / f"checkpoint_epoch_{epoch}.tar")
    return exp, state, ckpt


@pytest.fixture
def anchors_file(tmp_path):
    path = tmp_path / "anchors_39.npy"
    np.save(path, np.random.RandomState(0).randn(39, 3).astype(np.float32) * 0.2)
    return path


def test_load_official_nphm_identity(tmp_path, anchors_file):
    exp, state, ckpt = official_experiment(tmp_path, "nphm_id", "nphm.yaml", OFFICIAL_SHAPES["nphm_identity"], 15000, 7, 1344)
    model, latents = load_identity(exp, 15000, anchors_path=anchors_file)
    assert isinstance(model, NPHMIdentity) and not model.training
    assert torch.equal(model.ensembled_deep_sdf.lin2.weight, state["ensembled_deep_sdf.lin2.weight"])
    assert torch.allclose(model.anchors_mean, torch.from_numpy(np.load(anchors_file)))
    assert latents["train"].shape == (7, 1344) and latents["val"].shape == (3, 1344)
    assert torch.equal(latents["train"], ckpt["latent_codes_state_dict"]["weight"])


def test_load_official_npm_identity(tmp_path):
    exp, state, _ = official_experiment(tmp_path, "npm_id", "npm.yaml", OFFICIAL_SHAPES["npm_identity"], 7770, 5, 512)
    model, latents = load_identity(exp, 7770)
    assert isinstance(model, NPMIdentity)
    assert torch.equal(model.lin3.weight, state["lin3.weight"])
    assert model.anchors(latents["train"][:1]) is None


def test_load_official_nphm_expression_despite_config_quirk(tmp_path):
    # nphm_def.yaml says pos_mlp_dim 128; irrelevant to the deformation net but must not break it
    exp, state, _ = official_experiment(
        tmp_path, "nphm_ex", "nphm_def.yaml", OFFICIAL_SHAPES["nphm_expression"], 2500, 11, 200, mode="compress")
    model, latents = load_expression(exp, 2500)
    assert isinstance(model, NPHMDeformation) and model.mode == "compress"
    assert torch.equal(model.compressor[0].weight, state["compressor.0.weight"])
    assert latents["train"].shape == (11, 200)


def test_load_official_npm_expression_despite_config_quirk(tmp_path):
    # npm_def.yaml says decoder_hidden_dim 512, the weights are 8 x 1024
    exp, state, _ = official_experiment(
        tmp_path, "npm_ex", "npm_def.yaml", OFFICIAL_SHAPES["npm_expression"], 2500, 4, 200, mode="npm")
    model, _ = load_expression(exp, 2500)
    assert isinstance(model, NPMDeformation)
    assert model.lin0.weight.shape == (1024, 715)


def test_expression_mode_inferred_without_config_entry(tmp_path):
    exp, _, _ = official_experiment(tmp_path, "nphm_ex", "nphm_def.yaml", OFFICIAL_SHAPES["nphm_expression"], 10, 2, 200)
    model, _ = load_expression(exp, 10)
    assert model.mode == "compress"


def test_wrong_shape_names_key_and_shapes(tmp_path, anchors_file):
    shapes = dict(OFFICIAL_SHAPES["nphm_identity"])
    shapes["ensembled_deep_sdf.lin3.weight"] = (24, 200, 190)
    exp, _, _ = official_experiment(tmp_path, "bad", "nphm.yaml", shapes, 1, 2, 1344)
    with pytest.raises(ValueError) as err:
        load_identity(exp, 1, anchors_path=anchors_file)
    msg = str(err.value)
    assert "ensembled_deep_sdf.lin3.weight" in msg and "(24, 200, 190)" in msg and "(24, 200, 200)" in msg


def test_missing_checkpoint_and_anchors_are_clear(tmp_path):
    exp, _, _ = official_experiment(tmp_path, "nphm_id", "nphm.yaml", OFFICIAL_SHAPES["nphm_identity"], 5, 2, 1344)
    with pytest.raises(FileNotFoundError, match="checkpoint_epoch_6.tar.*5"):
        load_identity(exp, 6)
    with pytest.raises(ValueError, match="anchors"):
        load_identity(exp, 5)
    (exp / "checkpoints" / "checkpoint_epoch_7.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint_epoch_7.tar"):
        load_identity(exp, 7)


def test_own_checkpoint_roundtrip_keeps_mean_anchors(tmp_path):
    cfg = {"decoder": {"decoder_lat_dim_glob": 64, "decoder_lat_dim_loc": 32, "decoder_hidden_dim": 128,
                       "decoder_nlayers": 4, "decoder_nloc": 39, "decoder_nsymm_pairs": 16}}
    model = NPHMIdentity(hidden_dim=128, anchors_mean=torch.randn(39, 3))
    lat = torch.nn.Embedding(4, 1344, max_norm=1.0)
    save_config(tmp_path / "exp", cfg)
    save_checkpoint(tmp_path / "exp", 3, model, lat)
    assert available_epochs(tmp_path / "exp") == [3]
    loaded, latents = load_identity(tmp_path / "exp", 3)
    assert torch.equal(loaded.anchors_mean, model.anchors_mean)
    pts, z = torch.rand(1, 50, 3) - 0.5, latents["train"][:1]
    with torch.no_grad():
        assert torch.allclose(loaded(pts, z)[0], model.eval()(pts, z)[0])
    assert latents["val"].shape == (0, 1344)
