"""What is not head: the robust surface loss and the crop (nphm.fitting.losses, nphm.fitting.crop)."""
import numpy as np
import pytest
import torch

from nphm.analytic import smooth_union
from nphm.fitting.crop import crop_head, mean_head_neck_plane, model_neck_plane, neck_plane_for
from nphm.fitting.joint import fit_joint
from nphm.fitting.losses import geman_mcclure, surface_loss, surface_penalty
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.preprocessing.observations import ObservationProtocol
from support.recovery import render_observations
from support.toy_models import AnalyticExpression, AnalyticHeadIdentity, toy_head_sdf

pytestmark = pytest.mark.usefixtures("single_thread")


class NeckedToyHead(AnalyticHeadIdentity):
    """The toy head on a neck: a vertical capsule (radius 0.085) whose lower end is the fifth
    latent (``y = -0.40 + z[4]``). Scans cut at the throat see only its upper part, so nothing
    but the regulariser holds its length: shoulders below pull it down, as they pull NPHM's neck."""

    def __init__(self) -> None:
        super().__init__()
        self.lat_dim = 5

    def forward(self, points, z_id, mode=None, anchors=None):
        head = toy_head_sdf(points, self.params(z_id[:, :4])[:, None, :])
        bottom = (-0.40 + z_id[:, 4:5]).to(points.dtype)
        y = points[..., 1]
        t = torch.minimum(torch.maximum(y, bottom), torch.full_like(y, -0.15))
        neck = torch.sqrt(points[..., 0] ** 2 + (y - t) ** 2 + (points[..., 2] + 0.03) ** 2 + 1e-12) - 0.085
        return smooth_union(head, neck, 0.03)[..., None], None


Z_ID = torch.tensor([0.12, -0.08, 0.1, 0.06, 0.0])
Z_EX = torch.tensor([[0.0, 0.0], [0.16, 0.06]])
SETTINGS = FittingSettings(step_scale=0.15, points_per_observation=300, grid_min=(-0.55, -0.7, -0.95))
THROAT_Y = -0.38  # the observations are cut here (the dataset's throat cut)
SHOULDERS_Y = -0.515  # 3 cm below the end of the neck (-0.485)
#: the crop's neck plane: y = -0.40, normal up (not of unit length)
NECK_PLANE = (np.array([0.0, -0.40, 0.0]), np.array([0.0, 2.0, 0.0]))


@pytest.fixture(scope="module")
def shoulders():
    """Clean observations (0.5 mm noise) and the same with 20 % shoulder points (a plane under the neck)."""
    idm, de = NeckedToyHead(), AnalyticExpression(lat_dim_id=5)
    _, truth = mesh_fit(idm, de, Z_ID, Z_EX, 48, (SETTINGS.grid_min, SETTINGS.grid_max))
    rng = np.random.default_rng(0)
    clean = render_observations(truth, seed=0, protocol=ObservationProtocol(resolution=150),
                                keep=lambda p: p[:, 1] > THROAT_Y)
    clean = [o + rng.normal(size=o.shape) * 0.002 for o in clean]
    outliers = []
    for o in clean:
        n = len(o) // 4  # 20 % of all points
        outliers.append(np.stack([rng.uniform(-0.25, 0.25, n), np.full(n, SHOULDERS_Y),
                                  rng.uniform(-0.28, 0.22, n)], 1))
    dirty = [np.concatenate([o, s]) for o, s in zip(clean, outliers)]
    return idm, de, clean, dirty


# ---------------------------------------------------------------------------------- the loss
def test_geman_mcclure_penalty():
    c = 0.01
    r = torch.linspace(-0.2, 0.2, 4001, dtype=torch.float64)
    rho = geman_mcclure(r, c)
    assert (rho <= c).all() and (rho <= r.abs() / 2 + 1e-15).all() and (rho >= 0).all()
    torch.testing.assert_close(rho, c * r ** 2 / (r ** 2 + c ** 2))
    x = r.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(geman_mcclure(x, c).sum(), x)
    assert float(slope.abs().max()) == pytest.approx(3 * np.sqrt(3) / 8, rel=1e-3)  # at r = c / sqrt(3)
    assert float(slope[r.abs() > 0.1].abs().max()) < 0.002  # far points barely pull
    # the surface term: the penalty's weighted mean over the clamp; L1 is the release's formula
    sdf = torch.tensor([0.001, -0.004, 0.02, 0.3], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 1.0, 5.0], dtype=torch.float64)
    assert float(surface_loss(sdf, w, 0.1)) == pytest.approx((0.001 + 2 * 0.004 + 0.02) / 4, rel=1e-12)
    assert surface_penalty("l1") is torch.abs
    expected = float((geman_mcclure(sdf[:3], 0.01) * w[:3]).sum() / 4)
    assert float(surface_loss(sdf, w, 0.1, surface_penalty("geman_mcclure", 0.01))) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="unknown surface loss"):
        surface_penalty("huber")


def test_robust_settings_round_trip():
    s = FittingSettings()
    assert (s.surface_loss, s.robust_scale, s.robust_scale_schedule) == ("l1", 0.01, {})
    assert s.penalty_at(0) is torch.abs
    r = FittingSettings.from_config({"surface_loss": "geman_mcclure", "robust_scale": 0.03,
                                     "robust_scale_schedule": {"250": 1 / 3}})
    assert r.robust_scale_at(249) == 0.03 and r.robust_scale_at(250) == pytest.approx(0.01)
    assert FittingSettings.from_config(r.to_config()) == r
    with pytest.raises(ValueError, match="surface_loss"):
        FittingSettings(surface_loss="l2")
    with pytest.raises(ValueError, match="robust_scale"):
        FittingSettings(robust_scale=0.0)


# ---------------------------------------------------------------------------------- the crop
def test_crop_head_keeps_exactly_the_box_above_the_neck_plane():
    rng = np.random.default_rng(0)
    bmin, bmax = np.array(SETTINGS.grid_min), np.array(SETTINGS.grid_max)
    p = rng.uniform(-1.2, 1.2, size=(20000, 3))
    p[:6] = [bmin, bmax, [0.0, -0.40, 0.0], [0.3, -0.40 + 1e-12, 0.1], [0.0, 0.0, bmax[2] + 1e-12], [0, 0, 0]]
    p[6] = np.nan
    keep = crop_head(p, (bmin, bmax), NECK_PLANE)
    inside = np.all((p >= bmin) & (p <= bmax), axis=1)
    above = p[:, 1] > -0.40
    assert np.array_equal(keep, inside & above)
    assert keep[[1, 3, 5]].all() and not keep[[0, 2, 4, 6]].any()  # box faces kept, the plane itself not
    assert crop_head(p[:2], (bmin, bmax))[:2].all()  # the box alone keeps its corners
    # margin along the unit normal, whatever the normal's length; torch input; default box
    for m in (-0.03, 0.02):
        expected = inside & (p[:, 1] > -0.40 + m)
        assert np.array_equal(crop_head(torch.as_tensor(p), (bmin, bmax), (NECK_PLANE[0], NECK_PLANE[1] * 7), m), expected)
    default = FittingSettings()
    assert np.array_equal(crop_head(p), np.all((p >= default.grid_min) & (p <= default.grid_max), axis=1))
    # a tilted plane
    n = np.array([0.0, 0.96, 0.27])
    tilted = crop_head(p, (bmin, bmax), (np.array([0.0, -0.5, -0.1]), n))
    assert np.array_equal(tilted, inside & ((p - [0.0, -0.5, -0.1]) @ (n / np.linalg.norm(n)) > 0))
    with pytest.raises(ValueError, match="no direction"):
        crop_head(p, (bmin, bmax), (NECK_PLANE[0], np.zeros(3)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        crop_head(p[:, :2])


def test_neck_plane_sources():
    from nphm.data.heads import load_ict_model, load_release_anchors

    origin, normal = load_ict_model().throat_plane()
    o, n = mean_head_neck_plane()
    assert np.allclose(o, origin) and np.allclose(n, normal) and np.linalg.norm(n) == pytest.approx(1.0)
    # carried to the release's mean anchors (which the head model is aligned to): nearly the same
    o2, n2 = mean_head_neck_plane(load_release_anchors())
    assert np.linalg.norm(o2 - origin) * 250 < 2.0 and np.degrees(np.arccos(min(1.0, n2 @ normal))) < 1.0
    # ... and to moved anchors, moved with them
    shifted = load_release_anchors() + [0.0, 0.1, 0.0]
    o3, n3 = mean_head_neck_plane(shifted)
    assert np.allclose(o3, o2 + [0.0, 0.1, 0.0], atol=1e-9) and np.allclose(n3, n2, atol=1e-9)
    with pytest.raises(ValueError, match="anchors"):
        mean_head_neck_plane(np.random.default_rng(0).normal(size=(39, 3)))
    # the rule: dataset scan, else the model's mean head (no anchors: the plane as it is), else none
    class Manager:
        def throat_plane(self, subject, expression):
            return NECK_PLANE

    o4, n4 = neck_plane_for(AnalyticHeadIdentity(), Manager(), 3, 1)
    assert np.array_equal(o4, NECK_PLANE[0]) and np.array_equal(n4, NECK_PLANE[1])
    o5, _ = model_neck_plane(AnalyticHeadIdentity())
    assert np.allclose(neck_plane_for(AnalyticHeadIdentity())[0], o5) and np.allclose(o5, origin)
    assert neck_plane_for() is None


# ---------------------------------------------------------------------------------- fits
def test_robust_fit_ignores_shoulders_and_the_crop_removes_them(shoulders):
    """20 % shoulder points 3 cm under the neck: the L1 fit stretches the neck into them, the
    Geman-McClure fit stays with its clean fit; the crop removes exactly them."""
    idm, de, clean, dirty = shoulders
    gm = SETTINGS.replace(surface_loss="geman_mcclure", robust_scale=0.01)
    fits = {}
    for name, settings in (("l1", SETTINGS), ("gm", gm)):
        for data_name, data in (("clean", clean), ("dirty", dirty)):
            fits[name, data_name] = fit_joint(idm, de, data, settings, torch.Generator().manual_seed(0),
                                              progress=False)
    neck_mm = {k: float(f.z_id[4]) * 250 for k, f in fits.items()}  # displacement of the neck's end
    pull_l1 = abs(neck_mm["l1", "dirty"] - neck_mm["l1", "clean"])
    pull_gm = abs(neck_mm["gm", "dirty"] - neck_mm["gm", "clean"])
    print(f"\nneck end moved by the shoulders: L1 {pull_l1:.1f} mm, Geman-McClure {pull_gm:.1f} mm; "
          f"head latents {({'/'.join(k): [round(float(v), 3) for v in f.z_id[:4]] for k, f in fits.items()})}")
    assert pull_l1 > 6.0 and pull_gm < 3.0 and pull_l1 > 3 * pull_gm
    for name in ("l1", "gm"):  # the head itself, seen above the throat, holds
        torch.testing.assert_close(fits[name, "dirty"].z_id[:4], fits[name, "clean"].z_id[:4], atol=0.005, rtol=0)
        torch.testing.assert_close(fits[name, "dirty"].z_ex, fits[name, "clean"].z_ex, atol=0.01, rtol=0)
    torch.testing.assert_close(fits["gm", "clean"].z_id[:4], fits["l1", "clean"].z_id[:4], atol=0.01, rtol=0)

    # the crop at the neck plane (and the box: a background wall behind the head) gives back the
    # clean scan, less its few points out of the box (the nose tip pokes out of the fitting box)
    wall = np.random.default_rng(1).uniform([-0.5, -0.4, -1.05], [0.5, 0.6, -0.97], size=(300, 3))
    box = (SETTINGS.grid_min, SETTINGS.grid_max)
    for c, d in zip(clean, dirty):
        scan = np.concatenate([d, wall])
        keep = crop_head(scan, box, NECK_PLANE)
        in_box = np.all((c >= box[0]) & (c <= box[1]), axis=1)
        assert in_box.mean() > 0.99
        assert np.array_equal(keep, np.concatenate([in_box, np.zeros(len(scan) - len(c), dtype=bool)]))
