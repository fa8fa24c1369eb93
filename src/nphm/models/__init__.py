"""Networks of NPHM and of the NPM baseline (their straightforward release-style evaluations,
the baselines of the tests and benchmarks, are in :mod:`nphm.reference.models`)."""
from nphm.models.deepsdf import DeepSDF
from nphm.models.deformation import NPHMDeformation, NPMDeformation
from nphm.models.ensemble import EnsembledDeepSDF
from nphm.models.identity import NPHMIdentity, NPMIdentity, blend_weights

__all__ = [
    "DeepSDF",
    "EnsembledDeepSDF",
    "NPHMIdentity",
    "NPMIdentity",
    "NPHMDeformation",
    "NPMDeformation",
    "blend_weights",
]
