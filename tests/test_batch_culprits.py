"""The batch scripts' promises on broken and missing input: a ledger kept across runs, exit codes,
errors that blame the right file, checks against the dataset description, crash-clean
resumes, and the small messages (issue cases 1-7)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from nphm import layout
from nphm.data import DataManager
from nphm.data.expected import missing_items
from nphm.utils.batch import DATASET, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, GROUND_TRUTH, OBSERVATION, InputError
from nphm.utils.io import host_name
from nphm.utils.ledger import Ledger
from test_evaluation import _run_script, _write_dataset

FAST = ["--n_samples", 3000, "--resolution_scale", 0.1, "--no_figures"]


@pytest.fixture
def evaluated(tmp_path):
    """A dataset of subjects 2 and 3 (two expressions each) and a results folder with a
    prediction per scan (the scan itself)."""
    data, meshes = _write_dataset(tmp_path, {2: [0, 1], 3: [0, 1]})
    results = tmp_path / "results"
    results.mkdir()
    for (s, e), mesh in meshes.items():
        mesh.export(str(results / f"{s}_{e}.ply"))
    argv = ["--results_dir", results, "--data_dir", data, "--single_view_dir", tmp_path / "none", *FAST]
    return {"data": data, "results": results, "argv": argv, "tmp": tmp_path, "meshes": meshes}


def _nan_scan(path):
    mesh = trimesh.load(str(path), process=False)
    v = np.array(mesh.vertices)
    v[[5, 9]] = np.nan
    trimesh.Trimesh(v, mesh.faces, process=False).export(str(path))


def _ledger(results):
    return Ledger(layout.ledger_dir(layout.evaluation_dir(results)))


# ------------------------------------------------------------------ 1 + 2: ledger across runs, exit codes
def test_failures_of_earlier_runs_stay_until_fixed(evaluated, capsys):
    results = evaluated["results"]
    (results / "2_1.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\ngarbage")
    (results / "3_0.ply").unlink()
    assert _run_script("eval", evaluated["argv"] + ["--subjects", 2]) == EXIT_ITEMS_FAILED
    assert _run_script("eval", evaluated["argv"] + ["--subjects", 3]) == EXIT_ITEMS_FAILED
    failures = json.loads(layout.failures_path(results).read_text())
    assert [(f["subject"], f["expression"], f["role"]) for f in failures] == [(2, 1, "prediction"), (3, 0, "prediction")]
    capsys.readouterr()
    assert _run_script("gather", ["--results_dir", results]) == EXIT_ITEMS_FAILED
    out = capsys.readouterr().out
    assert "2 failed" in out and "- failed subject 2 expression 1: prediction" in out
    assert "- failed subject 3 expression 0: prediction" in out and "not found" in out
    # the closing summary of a run lists what is still failed, over all runs
    evaluated["meshes"][(3, 0)].export(str(results / "3_0.ply"))
    assert _run_script("eval", evaluated["argv"] + ["--subjects", 3]) == EXIT_OK
    out = capsys.readouterr().out
    assert "this run: 1 evaluated, 1 already done" in out and "3 scans done, 1 failed" not in out
    assert [f["subject"] for f in json.loads(layout.failures_path(results).read_text())] == [2]
    assert [e.item for e in _ledger(results).with_status("failed")] == ["2_1"]
    evaluated["meshes"][(2, 1)].export(str(results / "2_1.ply"))
    assert _run_script("eval", evaluated["argv"]) == EXIT_OK
    assert _ledger(results).counts() == {"done": 4, "failed": 0, "skipped": 0}
    assert _run_script("gather", ["--results_dir", results]) == EXIT_OK


def test_usage_errors_have_their_own_exit_code(evaluated, tmp_path):
    with pytest.raises(SystemExit) as e:
        _run_script("eval", ["--results_dir", tmp_path / "nowhere", "--data_dir", evaluated["data"]])
    assert e.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as e:
        _run_script("eval", evaluated["argv"] + ["--shard", "2/2"])
    assert e.value.code == EXIT_USAGE
    assert _run_script("gather", ["--results_dir", tmp_path / "nowhere"]) == EXIT_USAGE
    from nphm.cli import fitting_pointclouds, sample_surface

    with pytest.raises(SystemExit) as e:
        fitting_pointclouds.main(["-cfg_file", str(tmp_path / "missing.yaml"), "-exp_name", "a", "-exp_tag", "b"])
    assert e.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as e:
        sample_surface.main(["--data_dir", str(tmp_path / "no_dataset"), "--out_dir", str(tmp_path / "out")])
    assert e.value.code == EXIT_USAGE


def test_static_shards_split_the_scans(evaluated):
    results, argv = evaluated["results"], evaluated["argv"]
    assert _run_script("eval", argv + ["--shard", "1/3"]) == EXIT_OK
    assert sorted(_ledger(results).entries()) == ["2_1"]  # scans in order 2_0 2_1 3_0 3_1: index 1
    assert _run_script("eval", argv + ["--shard", "0/3"]) == EXIT_OK
    assert sorted(_ledger(results).entries()) == ["2_0", "2_1", "3_1"]
    assert _run_script("eval", argv + ["--shard", "2/3"]) == EXIT_OK
    assert all(len(e.history) == 1 for e in _ledger(results).entries().values()) and len(_ledger(results).entries()) == 4


# ------------------------------------------------------------------ 3: the real culprit
def test_broken_ground_truth_is_blamed_not_the_prediction(evaluated):
    data, results = evaluated["data"], evaluated["results"]
    scan = data / "003" / "001" / "scan.ply"
    _nan_scan(scan)
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(8500, 3))).export(str(results / "2_1.ply"))
    full = results / "3_0.ply"
    full.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    assert _run_script("eval", evaluated["argv"]) == EXIT_ITEMS_FAILED
    failed = {e.item: e for e in _ledger(results).with_status("failed")}
    assert sorted(failed) == ["2_1", "3_0", "3_1"]
    gt = failed["3_1"]
    assert (gt.role, gt.file) == (GROUND_TRUTH, str(scan))
    assert gt.message == f"ground truth {scan}: 2 of {len(evaluated['meshes'][(3, 1)].vertices)} vertices have " \
                         "non-finite coordinates (NaN/inf)"
    assert failed["2_1"].role == "prediction" and failed["2_1"].file == str(results / "2_1.ply")
    assert "8500 vertices and no faces (a point cloud, not a triangle mesh)" in failed["2_1"].message
    assert failed["3_0"].role == "prediction" and "truncated" in failed["3_0"].message
    record = {(f["subject"], f["expression"]): f for f in json.loads(layout.failures_path(results).read_text())}
    assert record[(3, 1)]["prediction"] is None and record[(3, 1)]["role"] == GROUND_TRUTH


def test_observation_generator_names_the_broken_scan(evaluated):
    from nphm.preprocessing.observations import ObservationProtocol, generate_observations

    data = evaluated["data"]
    _nan_scan(data / "002" / "000" / "scan.ply")
    manager = DataManager(data, single_view_dir=evaluated["tmp"] / "views")
    results = {(r.subject, r.expression): r for r in
               generate_observations(manager, [2], protocol=ObservationProtocol(resolution=100, n_points=200))}
    bad = results[(2, 0)]
    assert bad.status == "failed" and bad.role == GROUND_TRUTH and bad.file == str(data / "002" / "000" / "scan.ply")
    assert "non-finite coordinates (NaN/inf)" in bad.message and "cannot convert" not in bad.message
    assert results[(2, 1)].status == "done"
    entry = Ledger(layout.ledger_dir(evaluated["tmp"] / "views")).get("2_0")
    assert entry.status == "failed" and entry.file == bad.file


def test_fitting_input_errors_name_the_observation(evaluated):
    manager = DataManager(evaluated["data"], single_view_dir=evaluated["tmp"] / "views")
    path = manager.observation_path(2, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(InputError) as e:
        layout.subject_observations(manager, 2)
    assert e.value.role == OBSERVATION and e.value.path == path and str(e.value).startswith(f"observation {path}: ")
    np.save(path, np.full((10, 3), np.nan))
    with pytest.raises(InputError, match="no finite points"):
        layout.subject_observations(manager, 2)


# ------------------------------------------------------------------ 4: what the description expects
def test_missing_expression_and_orphaned_prediction_are_reported(evaluated, capsys):
    data, results = evaluated["data"], evaluated["results"]
    desc = json.loads((data / "dataset.json").read_text())
    desc["subjects_test"] = [2, 3, 4]  # subject 4 is listed but absent
    desc["expressions"] = {"2": [0, 1], "3": [0, 1]}
    (data / "dataset.json").write_text(json.dumps(desc))
    shutil.rmtree(data / "003" / "001")  # the expression folder disappears; its prediction stays
    manager = DataManager(data)
    missing = missing_items(manager, None, "test", use="test")
    assert [(m.subject, m.expression) for m in missing] == [(3, 1), (4, -1)]
    assert "listed in the test split" in missing[1].message
    with pytest.warns(UserWarning, match="not found"):
        code = _run_script("eval", evaluated["argv"])
    assert code == EXIT_ITEMS_FAILED
    out = capsys.readouterr().out
    assert f"MISSING subject 3 expression 1: {data / '003' / '001'} not found" in out
    assert f"NOT EVALUATED prediction {results / '3_1.ply'} has no ground truth" in out
    ledger = _ledger(results)
    assert {e.item: (e.status, e.role) for e in ledger.entries().values() if e.status != "done"} == {
        "3_1": ("failed", DATASET), "4": ("failed", DATASET)}
    # the observation step reports the same
    from nphm.cli import generate_single_view_observations as gsv

    with pytest.warns(UserWarning):
        code = gsv.main(["--data_dir", str(data), "--out_dir", str(evaluated["tmp"] / "views"), "--resolution", "100",
                         "--n_points", "200"])
    assert code == EXIT_ITEMS_FAILED
    assert "MISSING subject 4: " in capsys.readouterr().out
    # the folder comes back: the entry of the missing scan is replaced by its evaluation
    (data / "003" / "001").mkdir()
    evaluated["meshes"][(3, 1)].export(str(data / "003" / "001" / "scan.ply"))
    for name in ("flame.ply", "s.npy", "R.npy", "t.npy"):
        shutil.copy(data / "003" / "000" / name, data / "003" / "001" / name)
    desc["subjects_test"] = [2, 3]
    (data / "dataset.json").write_text(json.dumps(desc))
    assert _run_script("eval", evaluated["argv"]) == EXIT_OK
    assert _ledger(results).counts([2, 3]) == {"done": 4, "failed": 0, "skipped": 0}
    assert _ledger(results).get("4").status == "failed"  # no longer asked for, still absent: kept
    (data / "004").mkdir()
    assert _run_script("eval", evaluated["argv"]) == EXIT_OK
    assert _ledger(results).get("4") is None


# ------------------------------------------------------------------ 5: crash-clean writes
def test_stale_temporary_files_are_removed_by_the_next_run(evaluated):
    results = evaluated["results"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = layout.eval_scan_dir(layout.evaluation_dir(results), 2, 0)
    folder.mkdir(parents=True)
    stale = folder / f".metrics.a1b2c3d4.{dead.pid}-{host_name()}.tmp.json"
    live = folder / f".metrics.e5f6g7h8.{os.getpid()}-{host_name()}.tmp.json"  # a writer still at work
    for p in (stale, live):
        p.write_text("{")
    assert _run_script("eval", evaluated["argv"]) == EXIT_OK
    assert not stale.exists() and live.exists()


def test_resume_falls_back_to_the_newest_readable_checkpoint(tiny, tmp_path, capsys):
    from nphm.checkpoints import checkpoint_path, newest_readable_checkpoint
    from nphm.training import stage1
    from support.training_fixtures import identity_config

    def train(nepochs):
        return stage1.train(identity_config("npm", nepochs=nepochs, ckpt_interval=1), tmp_path / "exp",
                            data_dir=tiny["data"], supervision_dir=tiny["identity"], device="cpu",
                            wandb_mode="disabled", progress=False)

    train(3)
    newest = checkpoint_path(tmp_path / "exp", 2)
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated newest checkpoint
    warnings = []
    epoch, ckpt = newest_readable_checkpoint(tmp_path / "exp", warnings.append)
    assert epoch == 1 and ckpt["epoch"] == 1 and "checkpoint_epoch_2.tar" in warnings[0]
    capsys.readouterr()
    result = train(3)
    assert result["start_epoch"] == 2 and result["last_epoch"] == 2
    assert "warning: resuming from epoch 1, the newest readable checkpoint" in capsys.readouterr().out
    assert newest_readable_checkpoint(tmp_path / "exp")[0] == 2  # rewritten whole


# ------------------------------------------------------------------ 7: small messages
def test_finished_training_says_nothing_is_left():
    from nphm.training.trainer import training_summary

    assert training_summary({"start_epoch": 41, "last_epoch": 40, "nepochs": 41}, "exp") == \
        "nothing left to train: exp already has all 41 epochs (newest checkpoint: epoch 40)"
    assert training_summary({"start_epoch": 3, "last_epoch": 5, "nepochs": 6}, "exp") == \
        "trained epochs 3..5 of 6 -> exp"


def test_fitting_help_text(capsys):
    from nphm.cli import fitting_pointclouds

    with pytest.raises(SystemExit):
        fitting_pointclouds.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs int(steps * step_scale) optimisation steps (e.g. 30 x 0.3 = 9 with the CPU configs)" in text
    assert "--step_scale" in text and "--shard K/N" in text


@pytest.mark.parametrize("script", ["eval", "fitting_pointclouds", "sample_surface", "sample_deformation_field",
                                    "generate_single_view_observations"])
def test_every_batch_script_has_shards_and_documents_its_exit_codes(script, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"nphm.cli.{script}").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--shard K/N" in text and "0 <= K < N" in text
    assert "Exit code: 0" in text and "3 some" in text and "2 usage" in text
