"""Synthetic head population in the NPHM dataset layout.

Lets every script of the project run end to end without the (restricted) real NPHM data:
human-like heads in the nphm frame with sampled identities (proportions, nose, ears, jaw,
chin, lips, hair, ...) and expressions (jaw opening with a mouth cavity, smile, pucker,
brows, eye closing, cheek puff, asymmetric variants), written as registrations (fixed
template topology, exact correspondences), FLAME-like coarse meshes, finer noisy scans open
at the neck and raw-frame similarities.

Modules: ``implicit`` (distance primitives), ``shape`` (identity), ``template`` (ray family,
grids), ``expression`` (displacement fields), ``landmarks`` (anchors, landmarks, masks,
throat plane), ``scan`` (noise, neck cut, similarity), ``subject`` (one subject in memory),
``writer`` (files).

Typical use::

    from nphm.data.synthetic import generate_dataset, SyntheticSubject
    generate_dataset("work/dataset", n_subjects=50, n_expressions=10, seed=0, workers=2)
    mesh = SyntheticSubject(subject=3, seed=0).registration(expression=2)   # in memory
"""
from nphm.data.synthetic.expression import (
    EXPRESSION_TYPES,
    NEUTRAL_CLOSED,
    NEUTRAL_OPEN,
    ExpressionParams,
    apply_expression,
    sample_expression,
)
from nphm.data.synthetic.landmarks import TemplateMetadata, get_metadata
from nphm.data.synthetic.shape import IdentityParams, head_sdf, identity_warp, sample_identity
from nphm.data.synthetic.subject import ScanItem, SyntheticSubject
from nphm.data.synthetic.template import Template, get_template
from nphm.data.synthetic.writer import GenerationReport, generate_dataset, split_subjects

__all__ = [
    "EXPRESSION_TYPES",
    "NEUTRAL_CLOSED",
    "NEUTRAL_OPEN",
    "ExpressionParams",
    "GenerationReport",
    "IdentityParams",
    "ScanItem",
    "SyntheticSubject",
    "Template",
    "TemplateMetadata",
    "apply_expression",
    "generate_dataset",
    "get_metadata",
    "get_template",
    "head_sdf",
    "identity_warp",
    "sample_expression",
    "sample_identity",
    "split_subjects",
]
