"""Meshing identity latents and posing them with a deformation network."""
import numpy as np
import pytest
import torch
from torch import nn

from nphm.analytic import sphere_sdf
from nphm.models import NPMDeformation
from nphm.reference.models import naive_deepsdf
from nphm.query import deform_points, sdf_function
from nphm.reconstruction import FITTING_BOUNDS, mesh_identity


class LatentSphere(nn.Module):
    """Identity-model interface around an analytic SDF: radius = 0.25 + z[0]."""

    lat_dim = 4

    def anchors(self, z):
        return None

    def forward(self, points, z, mode=None, anchors=None):
        r = 0.25 + z[:, :1, None]
        return (torch.linalg.vector_norm(points, dim=-1, keepdim=True) - r), None


def test_mesh_identity_radius_follows_latent():
    model = LatentSphere()
    for extra in (0.0, 0.05):
        z = torch.tensor([extra, 0.0, 0.0, 0.0])
        mesh = mesh_identity(model, z, resolution=64, device="cpu")
        radius = np.linalg.norm(mesh.vertices, axis=1)
        assert abs(radius.mean() - (0.25 + extra)) < 2e-3


def test_posed_mesh_is_canonical_plus_offsets():
    torch.manual_seed(0)
    identity = LatentSphere()
    deformation = NPMDeformation(lat_dim_id=4, lat_dim_expr=6, hidden_dim=32, n_layers=4).eval()
    z_id, z_ex = torch.zeros(4), torch.randn(6) * 0.1
    canonical = mesh_identity(identity, z_id, resolution=48, device="cpu")
    posed = mesh_identity(identity, z_id, resolution=48, deformation=deformation, z_ex=z_ex, device="cpu")
    assert np.array_equal(canonical.faces, posed.faces)
    v = torch.as_tensor(canonical.vertices, dtype=torch.float32)[None]
    with torch.no_grad():
        offsets = naive_deepsdf(deformation, v, torch.cat([z_id, z_ex])[None])[0]
    assert np.allclose(posed.vertices, (v[0] + offsets).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="deformation"):
        mesh_identity(identity, z_id, resolution=32, z_ex=z_ex, device="cpu")


def test_chunked_queries_equal_unchunked():
    torch.manual_seed(0)
    identity = LatentSphere()
    pts = torch.rand(1000, 3) - 0.5
    z = torch.tensor([0.1, 0, 0, 0])
    assert torch.allclose(sdf_function(identity, z, chunk=77)(pts), sphere_sdf(pts, 0.35), atol=1e-6)
    deformation = NPMDeformation(lat_dim_id=4, lat_dim_expr=6, hidden_dim=32, n_layers=4).eval()
    z_ex = torch.randn(6)
    a = deform_points(deformation, pts, z, z_ex, chunk=33)
    b = deform_points(deformation, pts, z, z_ex, chunk=5000)
    assert torch.allclose(a, b, atol=1e-6)
    assert FITTING_BOUNDS[0][2] == -0.95
