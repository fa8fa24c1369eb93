"""The shipped (default) models live in the real nphm frame: the NPHM identity model's mean
anchors (z = 0) lie where the release's mean anchors are (the release's
``anchors39_mean_nphm.npy``, shipped beside the ICT head model): within 10 mm on average and
25 mm for every anchor (mm at 250 per nphm unit)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nphm import paths
from nphm.data.heads import load_release_anchors
from nphm.fitting.alignment import MM_PER_NPHM

MODELS = paths.PRETRAINED
#: the NPHM models trained on the 300-subject ICT set (not the default yet, see its README)
CANDIDATE = Path(__file__).resolve().parents[1] / "pretrained" / "ict300_cpu"


def shipped_identity(models: Path = MODELS):
    from nphm.fitting import io as fio

    cfg = fio.load_fitting_config(paths.CONFIGS / "fitting_nphm_cpu.yaml")
    return fio.load_models(cfg.replace(exp_name_expr=None), "cpu", models).identity


def test_default_models_were_trained_on_realistic_heads():
    synthetic = json.loads((MODELS / "training_dataset.json").read_text())["synthetic"]
    assert synthetic.get("source") == "ict", synthetic.get("source")


@pytest.mark.parametrize("models", [MODELS, CANDIDATE], ids=["default", "ict300"])
def test_mean_anchors_lie_on_the_release_means(models):
    identity = shipped_identity(models)
    with torch.no_grad():
        anchors = identity.anchors(torch.zeros(1, identity.lat_dim))[0].double().numpy()
    release = load_release_anchors()
    d_mm = MM_PER_NPHM * np.linalg.norm(anchors - release, axis=1)
    worst = int(np.argmax(d_mm))
    assert d_mm.mean() <= 10.0 and d_mm.max() <= 25.0, (
        f"mean {d_mm.mean():.1f} mm, anchor {worst} {d_mm[worst]:.1f} mm")


def test_landmark_reference_is_in_the_release_frame():
    """The 39 anchors of the landmark reference (the training set's registrations) too."""
    from nphm.fitting.landmarks import load_landmark_reference

    ref = load_landmark_reference(MODELS, "39")
    d_mm = MM_PER_NPHM * np.linalg.norm(ref - load_release_anchors(), axis=1)
    assert d_mm.mean() <= 10.0 and d_mm.max() <= 25.0, (d_mm.mean(), d_mm.max())
