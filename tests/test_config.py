"""Configs: the YAML loader, the training settings of the release / CPU configs and the fitting
config type (values, round trips, errors that name the key)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from nphm.config import load_yaml, save_yaml
from nphm.fitting import io as fio
from nphm.fitting.config import FittingConfig
from nphm.fitting.schedule import FittingSettings
from nphm.training.config import ExpressionTrainingSettings, IdentityTrainingSettings
from nphm.cli.common import load_yaml_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
IDENTITY_CONFIGS = ["nphm.yaml", "npm.yaml", "nphm_cpu.yaml", "npm_cpu.yaml"]
EXPRESSION_CONFIGS = ["nphm_def.yaml", "npm_def.yaml", "nphm_def_cpu.yaml", "npm_def_cpu.yaml"]
FITTING_CONFIGS = sorted(p.name for p in CONFIGS.glob("fitting_*.yaml"))
MINIMAL = {"lr": 1e-3, "lr_lat": 1e-3, "weight_decay": 0.0, "lambdas": {"surf_sdf": 1.0}}


# ---------------------------------------------------------------------------------- YAML files
def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="fitting config not found: .*none.yaml"):
        load_yaml(tmp_path / "none.yaml", "fitting config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_yaml(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping"):
        load_yaml(bad)
    with pytest.raises(SystemExit, match="config file not found: .*none.yaml"):
        load_yaml_config(tmp_path / "none.yaml")


def test_save_yaml_keeps_the_key_order(tmp_path):
    data = {"b": 1, "a": {"z": [1, 2], "y": None}}
    path = save_yaml(tmp_path / "sub" / "x.yaml", data)
    assert load_yaml(path) == data and list(load_yaml(path)) == ["b", "a"]


# ---------------------------------------------------------------------------------- training settings
def _training(name):
    return load_yaml(CONFIGS / name)


@pytest.mark.parametrize("name", IDENTITY_CONFIGS)
def test_identity_configs_load_and_round_trip(name):
    cfg = _training(name)
    s = IdentityTrainingSettings.from_config(cfg)
    assert s == IdentityTrainingSettings.from_config(cfg["training"])
    assert IdentityTrainingSettings.from_config(s.to_config()) == s
    written = s.to_config()
    assert all(written[k] == v for k, v in cfg["training"].items()), "a key of the yaml changed or got lost"
    assert s.extra == {}


def test_identity_settings_values():
    release = IdentityTrainingSettings.from_config(_training("nphm.yaml"))
    assert (release.nepochs, release.batch_size, release.npoints_non_face, release.npoints_far) == (30001, 32, 50, 93)
    assert (release.num_workers, release.query_mode, release.anchors_mean, release.lr_decay_start_lat) == (
        8, "sparse", "asset", 1000)
    assert release.sparse_tol is None  # the model's own default, nphm.models.identity.SPARSE_TOL
    assert math.isclose(release.latent_init_std(64 + 39 * 32), 0.1 / math.sqrt(64 + 39 * 32))
    cpu = IdentityTrainingSettings.from_config(_training("nphm_cpu.yaml"))
    assert (cpu.nepochs, cpu.batch_size, cpu.npoints_non_face, cpu.npoints_far, cpu.sparse_tol) == (
        301, 4, 150, 64, 1e-4)
    assert (cpu.num_workers, cpu.val_interval, cpu.preview_resolution, cpu.lr_decay_start_lat) == (0, 10, 64, 0)
    # derived counts follow the given ones
    assert IdentityTrainingSettings.from_config({**MINIMAL, "npoints_decoder": 800}).npoints_far == 100


@pytest.mark.parametrize("name", EXPRESSION_CONFIGS)
def test_expression_configs_load_and_round_trip(name):
    cfg = _training(name)
    s = ExpressionTrainingSettings.from_config(cfg)
    assert ExpressionTrainingSettings.from_config(s.to_config()) == s
    written = s.to_config()
    assert all(written[k] == v for k, v in cfg["training"].items()), "a key of the yaml changed or got lost"
    assert s.extra == {"sigma_near": 0.01}  # a stage-1 key in the release's stage-2 configs: kept
    assert (s.npoints_zero, s.zero_box, s.lat_init_std, s.latent_init_std(200)) == (100, 1.25, 0.01, 0.01)


def test_expression_settings_values():
    release = ExpressionTrainingSettings.from_config(_training("nphm_def.yaml"))
    assert (release.nepochs, release.npoints_decoder, release.lr_decay_start_lat) == (8000, 1000, 0)
    assert (release.shape_exp_name, release.shape_ckpt) == ("SHAPE_EXP_NAME", "CHECKPOINT_EPOCH")
    cpu = ExpressionTrainingSettings.from_config(_training("npm_def_cpu.yaml"))
    assert (cpu.nepochs, cpu.batch_size, cpu.shape_exp_name, cpu.shape_ckpt, cpu.lr_decay_factor) == (
        401, 16, "npm_cpu", None, 0.5)


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "training.batch_size must be >= 1"),
    ({"nepochs": "many"}, "training.nepochs must be a number"),
    ({"lr": None}, "training.lr must be a number"),
    ({"query_mode": "fast"}, "training.query_mode"),
    ({"anchors_mean": "median"}, "training.anchors_mean"),
    ({"lambdas": [1.0]}, "training.lambdas must be a mapping"),
    ({"lambdas": {"surf_sdf": "heavy"}}, "training.lambdas.surf_sdf"),
])
def test_bad_training_values_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        IdentityTrainingSettings.from_config({"training": {**MINIMAL, **change}})


def test_missing_training_keys_are_named():
    with pytest.raises(KeyError, match="weight_decay"):
        ExpressionTrainingSettings.from_config({"training": {"lr": 1, "lr_lat": 1, "lambdas": {}}})
    with pytest.raises(KeyError, match="no 'training' section"):
        IdentityTrainingSettings.from_config({"training": None})


# ---------------------------------------------------------------------------------- fitting config
@pytest.mark.parametrize("name", FITTING_CONFIGS)
def test_fitting_config_round_trips(name, tmp_path):
    raw = load_yaml(CONFIGS / name)
    cfg = fio.load_fitting_config(CONFIGS / name)
    assert isinstance(cfg, FittingConfig)
    assert cfg.to_config() == raw and list(cfg.to_config()) == list(raw)
    assert FittingConfig.from_config(cfg.to_config()) == cfg
    assert cfg.settings == FittingSettings.from_config(raw["fitting"])
    assert (cfg.exp_name_shape, cfg.checkpoint_shape, cfg.exp_name_expr, cfg.checkpoint_expr) == (
        raw["exp_name_shape"], raw["checkpoint_shape"], raw["exp_name_expr"], raw["checkpoint_expr"])
    assert cfg.method == ("NPHM" if raw["local_shape"] else "NPM")
    # the copy a fit saves holds what the file holds
    assert load_yaml(fio.save_config_copy(tmp_path, cfg)) == raw


@pytest.mark.parametrize("name", FITTING_CONFIGS)
def test_with_steps_changes_only_the_steps(name):
    cfg = fio.load_fitting_config(CONFIGS / name)
    fewer = cfg.with_steps(60)
    assert fewer.settings == cfg.settings.replace(steps=60) and fewer.settings.steps == 60
    expected = cfg.to_config()
    expected["fitting"]["steps"] = 60
    assert fewer.to_config() == expected
    assert fewer.replace(settings=cfg.settings) == cfg
    scaled = cfg.with_step_scale(0.1)
    assert scaled.settings == cfg.settings.replace(step_scale=0.1)
    assert scaled.to_config()["fitting"] == {**cfg.to_config()["fitting"], "step_scale": 0.1}


def test_fitting_config_keeps_what_it_does_not_read():
    raw = {"exp_name_shape": "a", "checkpoint_shape": None, "exp_name_expr": "b", "checkpoint_expr": 5, "note": [1]}
    cfg = FittingConfig.from_config(raw)
    assert cfg.extra == {"note": [1]} and cfg.to_config() == raw
    assert cfg.settings == FittingSettings() and cfg.method == "NPHM"
    # the release's way of overriding the step count: only fitting.steps is added
    assert cfg.with_steps(10).to_config() == {**raw, "fitting": {"steps": 10}}
    assert cfg.replace(exp_name_expr=None).to_config() == {**raw, "exp_name_expr": None}
    full = FittingConfig(exp_name_shape="a", local_shape=False)
    assert FittingConfig.from_config(full.to_config()) == full and full.method == "NPM"


@pytest.mark.parametrize("change, message", [
    ({"exp_name_shape": None}, "exp_name_shape"),
    ({"checkpoint_shape": "latest"}, "checkpoint_shape must be an epoch number"),
    ({"checkpoint_expr": 1.5}, "checkpoint_expr must be an epoch number"),
    ({"local_shape": "yes"}, "local_shape must be true or false"),
    ({"fitting": {"steps": -1}}, "fitting.steps"),
    ({"fitting": {"broyden": {"max_iter": 3}}}, "max_iter"),
])
def test_bad_fitting_config_names_the_key(tmp_path, change, message):
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump({**load_yaml(CONFIGS / "fitting_nphm_cpu.yaml"), **change}))
    with pytest.raises(ValueError, match=message):
        fio.load_fitting_config(path)
    with pytest.raises(FileNotFoundError, match="fitting config not found"):
        fio.load_fitting_config(tmp_path / "none.yaml")
