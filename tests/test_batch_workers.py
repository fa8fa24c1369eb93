"""Many workers on one folder, and workers killed at random moments (SIGKILL), for the batch scripts.

Every run is a real script (``nphm.cli.*.main``) in its own process (:mod:`support.batch_runs`):
two and three workers started at once on one evaluation folder and one fitting folder must do
each item exactly once (read from the ledger's history) with the results of a single worker;
a worker of supervision sampling, training, fitting and evaluation killed at a random moment
and run again must end with the outputs of an uninterrupted run and no temporary file, partial
output or claim left behind.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from nphm import layout
from nphm.checkpoints import available_epochs, read_checkpoint
from nphm.data import DataManager
from nphm.preprocessing import storage
from nphm.utils.ledger import Ledger
from support import batch_runs as br
from support.training_fixtures import IDENTITY_NON_FACE, IDENTITY_SAMPLES, identity_config, state_arrays

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = [0, 1]  # two subjects of three expressions each: 6 scans
FIT_STEPS, FIT_RESOLUTION = 10, 16  # 10 release steps x step_scale 0.3 = 3 optimisation steps


def _fit_argv(world, out_root: Path, tag: str):
    return ["-cfg_file", ROOT / "configs" / "fitting_nphm_cpu.yaml", "-exp_name", "w", "-exp_tag", tag,
            "-resolution", FIT_RESOLUTION, "--steps", FIT_STEPS, "--no_figures", "--device", "cpu",
            "--subjects", *SUBJECTS, "--data_dir", world["data"], "--single_view_dir", world["views"],
            "--fitting_dir", out_root, "--experiment_dir", ROOT / "pretrained" / "synthetic_cpu"]


def _eval_argv(world, results: Path):
    return ["--results_dir", results, "--data_dir", world["data"], "--single_view_dir", world["views"],
            "--subjects", *SUBJECTS, "--n_samples", 3000, "--resolution_scale", 0.1, "--no_figures"]


def _predictions(world, folder: Path) -> Path:
    """A results folder holding the reference fit's posed meshes (the evaluation's input)."""
    folder.mkdir(parents=True)
    for path in world["fit_ref"].glob("*_*.ply"):
        if "canonical" not in path.name:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    """Observations of the tiny dataset's first subjects, a reference fit and its evaluation,
    each by one worker."""
    from nphm.preprocessing.observations import ObservationProtocol, generate_observations

    root = tmp_path_factory.mktemp("batch_workers")
    views = root / "views"
    manager = DataManager(tiny["data"], single_view_dir=views)
    assert all(r.status == "done" for r in generate_observations(manager, SUBJECTS,
                                                                  protocol=ObservationProtocol(resolution=250)))
    out = {"root": root, "data": tiny["data"], "views": views, "manager": manager, "tiny": tiny}
    fit = br.run("nphm.cli.fitting_pointclouds", _fit_argv(out, root / "fit", "ref"), root / "fit_ref.log")
    assert fit.exitcode == 0, fit.log[-3000:]
    out["fit_ref"] = layout.fitting_results_dir("w", "ref", root / "fit")
    out["fit_log"], out["fit_seconds"] = fit.log, fit.seconds
    results = _predictions(out, root / "eval_ref")
    ev = br.run("nphm.cli.eval", _eval_argv(out, results), root / "eval_ref.log")
    assert ev.exitcode == 0, ev.log[-3000:]
    out["eval_ref"], out["eval_seconds"] = results, ev.seconds
    return out


def _scans(world):
    return [(s, e) for s in SUBJECTS for e in world["manager"].test_expressions(s)]


def _metrics(results: Path, scans):
    return {(s, e): (json.loads(layout.metrics_path(results, s, e).read_text()),
                     json.loads(layout.metrics_path(results, s, e, "face").read_text())) for s, e in scans}


def _fit_outputs(folder: Path, world):
    """Every mesh (vertices, faces) and latent of a fitting folder, by file name."""
    out = {}
    import trimesh

    for s in SUBJECTS:
        for e in world["manager"].test_expressions(s):
            mesh = trimesh.load(str(layout.posed_mesh_path(folder, s, e)), process=False)
            out[f"{s}_{e}.ply"] = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
            out[f"{s}_{e}_z"] = (np.load(layout.latent_path(folder, s, e, "shape")),
                                 np.load(layout.latent_path(folder, s, e, "expr")))
        mesh = trimesh.load(str(layout.canonical_mesh_path(folder, s)), process=False)
        out[f"{s}_canonical"] = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k]):
            np.testing.assert_array_equal(x, y, err_msg=k)


def _assert_clean(folder: Path):
    assert br.temporaries(folder) == []
    assert br.claims_left(folder) == []


def _done_once(ledger: Ledger, keys, pids):
    """Every item of ``keys`` is done, its history holds exactly one run, by one of ``pids``."""
    entries = ledger.entries()
    assert sorted(entries) == sorted(keys)
    for key in keys:
        runs = entries[key].history
        assert [r["status"] for r in runs] == ["done"], (key, runs)
        assert runs[0]["pid"] in pids


# ------------------------------------------------------------------------------ many workers
@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_share_an_evaluation_folder(world, n_workers):
    results = _predictions(world, world["root"] / f"eval_{n_workers}")
    argv = _eval_argv(world, results)
    logs = [world["root"] / f"eval_{n_workers}_{i}.log" for i in range(n_workers)]
    workers = [br.Worker("nphm.cli.eval", argv, log) for log in logs]
    runs = [w.wait() for w in workers]
    assert [r.exitcode for r in runs] == [0] * n_workers, runs[0].log[-2000:]
    scans = _scans(world)
    ledger = Ledger(layout.ledger_dir(layout.evaluation_dir(results)))
    _done_once(ledger, [f"{s}_{e}" for s, e in scans], {w.process.pid for w in workers})
    assert _metrics(results, scans) == _metrics(world["eval_ref"], scans)
    _assert_clean(results)


@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_share_a_fitting_folder(world, n_workers):
    out_root = world["root"] / f"fit_{n_workers}"
    argv = _fit_argv(world, out_root, "shared")
    workers = [br.Worker("nphm.cli.fitting_pointclouds", argv, world["root"] / f"fit_{n_workers}_{i}.log")
               for i in range(n_workers)]
    runs = [w.wait() for w in workers]
    assert [r.exitcode for r in runs] == [0] * n_workers, runs[0].log[-2000:]
    folder = layout.fitting_results_dir("w", "shared", out_root)
    _done_once(Ledger(layout.ledger_dir(folder)), [str(s) for s in SUBJECTS], {w.process.pid for w in workers})
    _assert_same(_fit_outputs(folder, world), _fit_outputs(world["fit_ref"], world))
    _assert_clean(folder)


def test_fitting_plan_says_how_many_steps_run(world):
    """--steps counts release steps: the printed plan gives the optimisation steps actually run."""
    assert "plan: 3 optimisation steps per subject (fitting.steps 10 release steps x step_scale 0.3)" in world["fit_log"]
    summary = json.loads(layout.summary_path(world["fit_ref"], 0).read_text())
    assert summary["steps"] == 3


# ------------------------------------------------------------------------------ killed workers
def _killed_then_rerun(module, argv, folder_log: Path, seconds: float, rng, kills: int, reset):
    """Kill a worker ``kills`` times at random moments of a run of about ``seconds``, then run
    it to the end; returns the final run. A worker that finished before its moment (a run
    faster than ``seconds``) is started again on a fresh folder (``reset()``) with an earlier
    moment, so that every kill really interrupts a run."""
    for i in range(kills):
        for attempt in range(4):
            moment = br.kill_moment(rng, seconds * (0.5 ** attempt))
            _, killed = br.run_killed(module, argv, folder_log.with_suffix(f".kill{i}.{attempt}.log"), moment)
            if killed:
                break
            reset()
        else:
            pytest.fail(f"{module}: every run finished before it could be killed")
    final = br.run(module, argv, folder_log)
    assert final.exitcode == 0, final.log[-3000:]
    return final


def _supervision_stage(world, rng, kills):
    tiny = world["tiny"]
    out = world["root"] / f"identity_killed_{kills}"
    argv = ["--data_dir", tiny["data"], "--out_dir", out, "--subjects", *SUBJECTS,
            "--n_samples", IDENTITY_SAMPLES, "--n_non_face", IDENTITY_NON_FACE]
    reference = br.run("nphm.cli.sample_surface", argv, out.with_suffix(".ref.log"))  # times a full run
    assert reference.exitcode == 0
    shutil.rmtree(out)
    _killed_then_rerun("nphm.cli.sample_surface", argv, out.with_suffix(".log"), reference.seconds, rng, kills,
                       lambda: shutil.rmtree(out))
    manager = world["manager"]
    for s in SUBJECTS:  # the tiny fixture sampled the same subjects with the same settings and seed
        e = manager.neutral_expression(s)
        for got, want in zip(storage.identity_paths(out, s, e), storage.identity_paths(tiny["identity"], s, e)):
            np.testing.assert_array_equal(np.load(got), np.load(want))
    _assert_clean(out)


def _training_stage(world, rng, kills):
    tiny = world["tiny"]
    cfg_path = world["root"] / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(identity_config("npm", nepochs=5, ckpt_interval=1)))

    def argv(name):
        return ["-cfg_file", cfg_path, "-exp_name", name, "--data_dir", tiny["data"], "--supervision_dir",
                tiny["identity"], "--experiment_dir", world["root"] / "experiments", "--device", "cpu",
                "--wandb", "disabled", "--no_progress"]

    straight = br.run("nphm.cli.train", argv("straight"), world["root"] / "train_straight.log")
    assert straight.exitcode == 0, straight.log[-3000:]
    name = f"killed_{kills}"
    exp = world["root"] / "experiments"
    final = _killed_then_rerun("nphm.cli.train", argv(name), world["root"] / f"train_{name}.log",
                               straight.seconds, rng, kills, lambda: shutil.rmtree(exp / name))
    assert "trained epochs" in final.log or "nothing left to train" in final.log
    assert available_epochs(exp / name) == available_epochs(exp / "straight") == [0, 1, 2, 3, 4]
    a, b = state_arrays(read_checkpoint(exp / "straight", 4)), state_arrays(read_checkpoint(exp / name, 4))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    _assert_clean(exp / name)


def _fitting_stage(world, rng, kills):
    out_root = world["root"] / f"fit_killed_{kills}"
    argv = _fit_argv(world, out_root, "killed")
    _killed_then_rerun("nphm.cli.fitting_pointclouds", argv, world["root"] / f"fit_killed_{kills}.log",
                       world["fit_seconds"], rng, kills, lambda: shutil.rmtree(out_root))
    folder = layout.fitting_results_dir("w", "killed", out_root)
    _assert_same(_fit_outputs(folder, world), _fit_outputs(world["fit_ref"], world))
    _assert_clean(folder)


def _evaluation_stage(world, rng, kills):
    results = _predictions(world, world["root"] / f"eval_killed_{kills}")
    _killed_then_rerun("nphm.cli.eval", _eval_argv(world, results), world["root"] / f"eval_killed_{kills}.log",
                       world["eval_seconds"], rng, kills,
                       lambda: shutil.rmtree(layout.evaluation_dir(results), ignore_errors=True))
    scans = _scans(world)
    _assert_metrics_close(_metrics(results, scans), _metrics(world["eval_ref"], scans))
    _assert_clean(results)


def _assert_metrics_close(found: dict, expected: dict, rtol: float = 1e-6) -> None:
    """The same scans and metric names, values equal up to float rounding (a rerun after a kill
    may sample the ground truth in another process: differences of 1e-8 relative were seen)."""
    assert found.keys() == expected.keys()
    for key in expected:
        for got, want in zip(found[key], expected[key]):
            assert got.keys() == want.keys(), key
            for name, value in want.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    assert abs(got[name] - value) <= rtol * max(1.0, abs(value)), (key, name, got[name], value)
                else:
                    assert got[name] == value, (key, name)


STAGES = {"supervision": _supervision_stage, "training": _training_stage, "fitting": _fitting_stage,
          "evaluation": _evaluation_stage}


@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_stage_reruns_to_the_uninterrupted_outputs(world, stage):
    STAGES[stage](world, random.Random(f"{stage}-1"), kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_killed_again_and_again_reruns_to_the_uninterrupted_outputs(world, stage):
    """The long variant: three kills at random moments before the run that finishes."""
    STAGES[stage](world, random.Random(f"{stage}-3"), kills=3)
