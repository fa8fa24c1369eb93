"""Training supervision: surface samples of the neutral scans (identity) and neutral <-> posed
correspondences (expressions), their storage, the single-view test observations
(:mod:`nphm.preprocessing.observations`, imported on demand) and batch jobs over a dataset."""
from nphm.preprocessing.deformation import sample_correspondences, sample_deformation_supervision
from nphm.preprocessing.identity import IdentitySamples, sample_identity_supervision
from nphm.preprocessing.jobs import (
    DeformationSettings,
    IdentitySettings,
    PRESETS,
    sample_deformation_dataset,
    sample_identity_dataset,
)
from nphm.preprocessing.storage import (
    RowArray,
    SupervisionError,
    deformation_path,
    identity_paths,
    open_deformation,
    open_identity,
)

__all__ = [
    "DeformationSettings",
    "IdentitySamples",
    "IdentitySettings",
    "PRESETS",
    "RowArray",
    "SupervisionError",
    "deformation_path",
    "identity_paths",
    "open_deformation",
    "open_identity",
    "sample_correspondences",
    "sample_deformation_dataset",
    "sample_deformation_supervision",
    "sample_identity_dataset",
    "sample_identity_supervision",
]
