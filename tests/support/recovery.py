"""Recovery experiment: fit a model to renderings of its own meshes and measure the error.

Truth: an identity latent and some expression latents of a trained model; their meshes (the
canonical zero level set pushed forward by each expression) are rendered with the release's
single-view camera protocol (:mod:`nphm.preprocessing.observations`: a random frontal view per expression,
plus a view from behind for the first), and the model is fitted to those points from zero
latents. Errors are symmetric Chamfer distances between surface samples of the fitted and the
true posed meshes, next to the same distance for the mean head (zero latents).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import point_cloud_utils as pcu
import torch
import trimesh
from torch import nn

from nphm.preprocessing.observations import ObservationProtocol, back_eye, frontal_eye, observe
from nphm.fitting.joint import FitResult, fit_joint
from nphm.fitting.meshing import mesh_fit
from nphm.fitting.schedule import FittingSettings
from nphm.rendering import MeshRayCaster


def render_observations(
    meshes: Sequence[trimesh.Trimesh],
    seed: int = 0,
    protocol: ObservationProtocol = ObservationProtocol(),
    back_first: bool = True,
    keep: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> List[np.ndarray]:
    """Single-view observations (N_i, 3) of meshes in the nphm frame (release camera protocol).

    Args:
        keep: ``(N, 3) -> bool (N,)`` points to keep (e.g. a neck cut); default all.
    """
    rng = np.random.default_rng(seed)
    keep = keep or (lambda p: np.ones(len(p), dtype=bool))
    out = []
    for i, mesh in enumerate(meshes):
        caster = MeshRayCaster(np.asarray(mesh.vertices), np.asarray(mesh.faces))
        points = observe(caster, frontal_eye(rng, protocol), keep, rng, protocol).points
        if back_first and i == 0:
            points = np.concatenate([points, observe(caster, back_eye(protocol), keep, rng, protocol).points])
        out.append(points)
    return out


def surface_distance(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Distance (N,) of every point (N, 3) to the surface of ``mesh``."""
    d, _, _ = pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64),
                                         np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                                         np.ascontiguousarray(mesh.faces, dtype=np.int64))
    return np.asarray(d)


def sampled_surface_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, n: int = 20_000, seed: int = 0) -> float:
    """Symmetric mean surface distance ``(mean d(a->B) + mean d(b->A)) / 2``: ``n`` area-uniform surface
    samples of each mesh against the other mesh's surface (in the meshes' unit)."""
    pa, _ = trimesh.sample.sample_surface(a, n, seed=seed)
    pb, _ = trimesh.sample.sample_surface(b, n, seed=seed + 1)
    return float(0.5 * (surface_distance(pa, b).mean() + surface_distance(pb, a).mean()))


@dataclass
class RecoveryResult:
    """Chamfer distances (nphm units) per expression of the fitted and of the mean head."""

    chamfer_fit: List[float]
    chamfer_mean: List[float]
    fit: FitResult
    observations: List[np.ndarray] = field(default_factory=list)
    truth: List[trimesh.Trimesh] = field(default_factory=list)
    fitted: List[trimesh.Trimesh] = field(default_factory=list)

    @property
    def mean_fit(self) -> float:
        return float(np.mean(self.chamfer_fit))

    @property
    def mean_baseline(self) -> float:
        return float(np.mean(self.chamfer_mean))


def recovery_experiment(
    identity: nn.Module,
    deformation: nn.Module,
    z_id: torch.Tensor,
    z_ex: torch.Tensor,
    settings: FittingSettings,
    resolution: int = 128,
    protocol: ObservationProtocol = ObservationProtocol(),
    seed: int = 0,
    progress: bool = False,
    keep: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> RecoveryResult:
    """Render the model's meshes of ``z_id`` (D_id,) posed by ``z_ex`` (E, D_ex), fit from zero
    latents and compare (see the module docstring)."""
    bounds = (settings.grid_min, settings.grid_max)
    _, truth = mesh_fit(identity, deformation, z_id, z_ex, resolution, bounds)
    observations = render_observations(truth, seed, protocol, keep=keep)
    fit = fit_joint(identity, deformation, observations, settings, torch.Generator().manual_seed(seed), progress)
    _, fitted = mesh_fit(identity, deformation, fit.z_id, fit.z_ex, resolution, bounds)
    _, mean = mesh_fit(identity, deformation, torch.zeros_like(z_id), torch.zeros_like(z_ex), resolution, bounds)
    return RecoveryResult(
        chamfer_fit=[sampled_surface_distance(f, t) for f, t in zip(fitted, truth)],
        chamfer_mean=[sampled_surface_distance(m, t) for m, t in zip(mean, truth)],
        fit=fit,
        observations=observations,
        truth=truth,
        fitted=fitted,
    )
