"""Posing a canonical mesh (nphm.reconstruction.pose_mesh) with an analytic deformation."""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from torch import nn

from nphm.fitting import meshing
from nphm.reconstruction import mesh_identity, pose_mesh


class AffineDeformation(nn.Module):
    """D(x) = z_ex[:3] * x + z_id[:3] + mean of the anchors (when given)."""

    def forward(self, points, z_id, z_ex, anchors=None):
        offset = z_ex[:, None, :3] * points + z_id[:, None, :3]
        if anchors is not None:
            offset = offset + anchors.mean(dim=1, keepdim=True)
        return offset


class LatentSphere(nn.Module):
    """Identity-model interface: SDF of the sphere of radius 0.3 + z[0]; two fixed anchors."""

    lat_dim = 4

    def anchors(self, z):
        return torch.tensor([[[0.0, 0.1, 0.0], [0.0, 0.0, 0.3]]]).expand(z.shape[0], -1, -1)

    def forward(self, points, z, mode=None, anchors=None):
        return torch.linalg.vector_norm(points, dim=-1, keepdim=True) - (0.3 + z[:, :1, None]), None


def _expected(vertices, z_id, z_ex, anchors):
    x = np.asarray(vertices, dtype=np.float32).astype(np.float64)
    shift = np.zeros(3) if anchors is None else np.asarray(anchors, np.float64).reshape(-1, 3).mean(0)
    return x + z_ex.numpy()[:3] * x + z_id.numpy()[:3] + shift


def test_posed_vertices_are_x_plus_d_of_x():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    mesh.metadata["n_grid"] = 7
    z_id = torch.tensor([0.01, -0.02, 0.03, 0.5])
    z_ex = torch.tensor([0.1, -0.2, 0.05, 9.0, 9.0])
    anchors = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.4, -0.2]])
    for a in (None, anchors, anchors[None]):
        posed = pose_mesh(mesh, AffineDeformation(), z_id, z_ex, a, chunk=17)
        assert np.array_equal(posed.faces, mesh.faces)
        np.testing.assert_allclose(posed.vertices, _expected(mesh.vertices, z_id, z_ex, a), atol=1e-6)
        assert "n_grid" not in posed.metadata
    whole = pose_mesh(mesh, AffineDeformation(), z_id, z_ex, anchors)
    assert np.array_equal(whole.vertices, pose_mesh(mesh, AffineDeformation(), z_id, z_ex, anchors, chunk=5).vertices)
    assert meshing.pose_mesh is pose_mesh


def test_mesh_identity_and_mesh_fit_pose_with_it():
    identity, deformation = LatentSphere(), AffineDeformation()
    z_id = torch.tensor([0.05, 0.01, 0.0, 0.0])
    z_ex = torch.tensor([[0.1, 0.0, -0.1], [0.0, 0.2, 0.0]])
    anchors = identity.anchors(z_id[None])[0]
    canonical = mesh_identity(identity, z_id, resolution=32, device="cpu")
    posed = mesh_identity(identity, z_id, resolution=32, deformation=deformation, z_ex=z_ex[0], device="cpu")
    assert np.array_equal(posed.faces, canonical.faces)
    np.testing.assert_allclose(posed.vertices, _expected(canonical.vertices, z_id, z_ex[0], anchors), atol=1e-6)
    assert posed.metadata == canonical.metadata and "n_evaluated" in posed.metadata
    bounds = ([-0.6] * 3, [0.6] * 3)
    fit_canonical, fit_posed = meshing.mesh_fit(identity, deformation, z_id, z_ex, 32, bounds)
    assert len(fit_posed) == 2
    for i, mesh in enumerate(fit_posed):
        assert np.array_equal(mesh.faces, fit_canonical.faces)
        np.testing.assert_allclose(mesh.vertices, _expected(fit_canonical.vertices, z_id, z_ex[i], anchors), atol=1e-6)
