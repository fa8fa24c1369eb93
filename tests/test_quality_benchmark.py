"""Quality benchmark plumbing: test-split restriction, training policy, report tables."""
from __future__ import annotations

from pathlib import Path

import pytest

from nphm.experiments import quality
from nphm.experiments.quality import QualityConfig, ensure_models, metric_table
from nphm.experiments.stages import MethodRun, restrict_test_split
from nphm.checkpoints import checkpoint_path
from nphm.data import DataManager
from nphm.data.description import DatasetDescription
from nphm.data.synthetic.writer import ASSET_FILES, build_description

REPO = Path(__file__).resolve().parents[1]


def _manager(tmp_path: Path, subjects=(0, 1, 2, 3, 4), n_expressions=5) -> DataManager:
    for s in subjects:
        for e in range(n_expressions):
            (tmp_path / "data" / f"{s:03d}" / f"{e:03d}").mkdir(parents=True)
    desc = build_description(list(subjects), n_expressions, 0, dict(ASSET_FILES))
    desc["invalid_expressions_test"] = {"4": [1]}
    return DataManager(tmp_path / "data", DatasetDescription.from_dict(desc), tmp_path / "single_view")


def _config(tmp_path: Path, train: str) -> QualityConfig:
    return QualityConfig(out_dir=tmp_path / "out", data_dir=tmp_path / "data", single_view_dir=tmp_path / "sv",
                         experiment_dir=tmp_path / "exp", supervision_identity=tmp_path / "sup_id",
                         supervision_deformation=tmp_path / "sup_def", config_dir=REPO / "configs", train=train)


def test_restrict_test_split_limits_subjects_and_expressions(tmp_path):
    manager = _manager(tmp_path)
    restricted = restrict_test_split(manager, [3, 4], max_expressions=2)
    assert restricted.subjects("test") == [3, 4]
    assert restricted.test_expressions(3) == [0, 1]
    assert restricted.test_expressions(4) == [0, 2]  # expression 1 was already invalid
    assert restricted.expressions(4) == [0, 1, 2, 3, 4]  # the data themselves are unchanged
    assert manager.subjects("test") == [4]  # the original manager is untouched


def test_training_policy(tmp_path, monkeypatch):
    manager = _manager(tmp_path)
    calls = []
    monkeypatch.setattr(quality, "_ensure_supervision", lambda cfg, m, kind, log: calls.append(("supervision", kind)))

    def fake_stage1(cfg, exp_dir, **kw):
        calls.append(("stage1", Path(exp_dir).name, kw["local"]))

    def fake_stage2(cfg, exp_dir, mode, **kw):
        calls.append(("stage2", Path(exp_dir).name, mode, cfg["training"]["shape_exp_name"]))

    monkeypatch.setattr("nphm.training.stage1.train", fake_stage1)
    monkeypatch.setattr("nphm.training.stage2.train", fake_stage2)
    method = quality.NEURAL_METHODS["nphm"]

    available, note = ensure_models(_config(tmp_path, "never"), method, manager, log=lambda s: None)
    assert not available and "nphm_cpu" in note and calls == []

    # an identity checkpoint exists: "missing" trains only the expression model
    identity_ckpt = checkpoint_path(tmp_path / "exp" / "nphm_cpu", 300)
    identity_ckpt.parent.mkdir(parents=True)
    identity_ckpt.write_bytes(b"")
    available, note = ensure_models(_config(tmp_path, "missing"), method, manager, log=lambda s: None)
    assert available and note == "trained nphm_def_cpu"
    assert calls == [("supervision", "deformation"), ("stage2", "nphm_def_cpu", "compress", "nphm_cpu")]

    calls.clear()
    ensure_models(_config(tmp_path, "resume"), quality.NEURAL_METHODS["npm"], manager, log=lambda s: None)
    assert calls == [("supervision", "identity"), ("stage1", "npm_cpu", False),
                     ("supervision", "deformation"), ("stage2", "npm_def_cpu", "npm", "npm_cpu")]


def test_config_rejects_unknown_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        QualityConfig(**{**_config(tmp_path, "never").__dict__, "methods": ("flame",)})
    with pytest.raises(ValueError, match="train must be one of"):
        _config(tmp_path, "sometimes")


def test_metric_table_rows_and_missing_methods():
    results = [MethodRun("npm", "NPM", note="not trained"),
               MethodRun("nphm", "NPHM", totals={"head": {"n_scans": 8, "chamfer_l1": 0.8764, "chamfer_l2": 1.2,
                                                             "normals consistency": 0.99, "f_score_05": 0.72,
                                                             "f_score_10": 0.997}})]
    table = metric_table(results, "head").splitlines()
    assert table[0].startswith("|  | scans | Chamfer-L1 (mm)")
    assert table[2] == "| NPM | - | - | - | - | - | - |"
    assert table[3] == "| NPHM | 8 | 0.876 | 1.200 | 0.990 | 0.720 | 0.997 |"
    assert metric_table(results, "face").splitlines()[3].startswith("| NPHM | - |")


def test_comparison_pictures_put_the_longer_list_across(tmp_path):
    import numpy as np
    import trimesh
    from PIL import Image

    from nphm.experiments.stages import comparison_pictures
    from nphm.layout import posed_mesh_path

    head = trimesh.creation.icosphere(subdivisions=2, radius=0.3)

    class Scans:
        def load_scan(self, subject, expression):
            return head

    fits = tmp_path / "fits"
    for e in range(3):
        path = posed_mesh_path(fits, 7, e)
        path.parent.mkdir(parents=True, exist_ok=True)
        head.export(path)
    run = MethodRun("nphm", "NPHM", results_dir=fits)
    many, one = comparison_pictures(tmp_path / "pics", Scans(), [run], [[(7, 0), (7, 1), (7, 2)], [(7, 1)]],
                                    ["many", "one"], ["three scans", "one scan"])
    # render_mesh_grid: 320 x 320 per tile, a front and a side row per row of tiles
    assert Image.open(many).size == (3 * 320, 2 * 2 * 320)  # a column per scan, scans above fits
    assert Image.open(one).size == (2 * 320, 2 * 320)  # a column per source
    assert np.asarray(Image.open(one)).std() > 0


def test_report_names_the_seed_and_source_of_the_dataset(tmp_path):
    import json

    from nphm.experiments.quality import dataset_origin

    cfg = _config(tmp_path, "never")
    assert dataset_origin(cfg) == f"synthetic, {cfg.dataset_source} heads, seed {cfg.dataset_seed}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"synthetic": {"source": "ict", "seed": 3}}))
    assert dataset_origin(cfg) == "synthetic, ict heads, seed 3"
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"synthetic": {"seed": 1}}))
    assert dataset_origin(cfg) == "synthetic, procedural heads, seed 1"
