"""Compact export of experiments and the held-out fingerprints of a synthetic training set."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from nphm.checkpoints import available_epochs, load_identity, read_checkpoint, save_checkpoint, save_config
from nphm.models import NPHMIdentity
from nphm.pretrained import export_compact, fingerprint_mismatches, held_out_fingerprints

CFG = {"decoder": {"decoder_lat_dim_glob": 8, "decoder_lat_dim_loc": 4, "decoder_nloc": 39,
                   "decoder_nsymm_pairs": 16, "decoder_hidden_dim": 24, "decoder_nlayers": 4}}


def _experiment(tmp_path):
    torch.manual_seed(0)
    model = NPHMIdentity(lat_dim_glob=8, lat_dim_loc=4, hidden_dim=24, pos_mlp_dim=16,
                         anchors_mean=torch.randn(39, 3) * 0.3)
    lat = torch.nn.Embedding(3, model.lat_dim)
    opt = torch.optim.Adam(list(model.parameters()) + list(lat.parameters()), lr=1e-3)
    loss = model(torch.rand(1, 20, 3), lat.weight[:1])[0].sum()  # give the optimiser some state
    loss.backward()
    opt.step()
    src = tmp_path / "src"
    save_config(src, CFG)
    save_checkpoint(src, 10, model, lat, optimizer_encoder=opt, extra={"rng": {"x": 1}, "subjects_train": [0, 1, 2]})
    save_checkpoint(src, 20, model, lat, optimizer_encoder=opt, extra={"subjects_train": [0, 1, 2]})
    return src, model.eval(), lat


def test_compact_copy_loads_identically_without_optimiser_state(tmp_path):
    src, model, lat = _experiment(tmp_path)
    path = export_compact(src, tmp_path / "dst")
    assert path.name == "checkpoint_epoch_20.tar" and available_epochs(tmp_path / "dst") == [20]
    ckpt = read_checkpoint(tmp_path / "dst", 20)
    assert ckpt["optimizer_encoder_state_dict"] is None and "rng" not in ckpt
    assert ckpt["subjects_train"] == [0, 1, 2]
    assert all(v.dtype == torch.float32 for v in ckpt["decoder_state_dict"].values() if v.is_floating_point())
    assert path.stat().st_size < 0.6 * (src / "checkpoints" / "checkpoint_epoch_20.tar").stat().st_size
    loaded, latents = load_identity(tmp_path / "dst", 20)
    torch.testing.assert_close(latents["train"], lat.weight.detach())
    x = torch.rand(1, 30, 3) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, latents["train"][:1])[0], model(x, lat.weight[:1])[0])


def test_export_refuses_to_replace_unless_asked(tmp_path):
    src, _, _ = _experiment(tmp_path)
    export_compact(src, tmp_path / "dst", epoch=20)
    with pytest.raises(FileExistsError, match="already holds"):
        export_compact(src, tmp_path / "dst", epoch=10)
    export_compact(src, tmp_path / "dst", epoch=10, overwrite=True)
    assert available_epochs(tmp_path / "dst") == [10]
    with pytest.raises(FileNotFoundError, match="checkpoint_epoch_5"):
        export_compact(src, tmp_path / "other", epoch=5)
    with pytest.raises(ValueError, match="same folder"):
        export_compact(src, src)


class _Registrations:
    def __init__(self, meshes):
        self.meshes = meshes

    def neutral_expression(self, subject, kind="open"):
        return 1

    def load_registration(self, subject, expression):
        return self.meshes[subject]


def test_fingerprints_detect_changed_subjects():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    meshes = {3: sphere, 4: sphere.copy()}
    prints = held_out_fingerprints(_Registrations(meshes), [3, 4])
    assert set(prints) == {"3", "4"} and len(prints["3"]["vertex_ids"]) == 32
    assert fingerprint_mismatches(_Registrations(meshes), prints, [3, 4, 5]) == []
    moved = meshes[4].copy()
    moved.vertices = np.asarray(moved.vertices) + [0.0, 0.01, 0.0]
    problems = fingerprint_mismatches(_Registrations({3: sphere, 4: moved}), prints, [3, 4])
    assert len(problems) == 1 and problems[0].startswith("subject 4") and "1.00e-02" in problems[0]


def test_export_renames_the_identity_experiment_of_a_stage2_config(tmp_path):
    from nphm.checkpoints import load_config

    src, _, _ = _experiment(tmp_path)
    stage2 = tmp_path / "stage2"
    save_config(stage2, {"training": {"shape_exp_name": "src", "shape_ckpt": 20}})
    (stage2 / "checkpoints").mkdir(exist_ok=True)
    torch.save({"decoder_state_dict": {}}, stage2 / "checkpoints" / "checkpoint_epoch_5.tar")
    export_compact(stage2, tmp_path / "out" / "def_cpu", renamed={"src": "id_cpu", "stage2": "def_cpu"})
    assert load_config(tmp_path / "out" / "def_cpu")["training"] == {"shape_exp_name": "id_cpu", "shape_ckpt": 20}
    export_compact(stage2, tmp_path / "out" / "kept", renamed={"other": "x"})
    assert load_config(tmp_path / "out" / "kept")["training"]["shape_exp_name"] == "src"
