"""Synthetic head population in the NPHM dataset layout.

Lets every script of the project run end to end without the (restricted) real NPHM data:
human-like heads in the nphm frame with sampled identities (proportions, nose, ears, jaw,
chin, lips, hair, ...) and expressions (jaw opening with a mouth cavity, smile, pucker,
brows, eye closing, cheek puff, asymmetric variants), written as registrations (fixed
template topology, exact correspondences), FLAME-like coarse meshes, finer noisy scans open
at the neck and raw-frame similarities.

Two sources of heads, written by the same ``writer``: ``"procedural"`` (this package's
implicit heads; small and fast, the library default) and ``"ict"`` (realistic heads from the
ICT Face Model with hair, eyes, mouth interior and scanner-like scans:
:mod:`nphm.data.synthetic.ict`, the default of ``scripts/dataset/make_synthetic.py``).

Modules: ``implicit`` (distance primitives), ``shape`` (identity), ``template`` (ray family,
grids), ``expression`` (displacement fields), ``landmarks`` (anchors, landmarks, masks,
throat plane), ``scan`` (noise, neck cut, similarity), ``subject`` (one subject in memory),
``writer`` (files, sources), ``ict`` (the ICT source).

Typical use::

    from nphm.data.synthetic import generate_dataset, SyntheticSubject
    generate_dataset("work/dataset", n_subjects=50, n_expressions=10, seed=0, workers=2)
    generate_dataset("work/ict", n_subjects=200, n_expressions=8, seed=0, workers=2, source="ict")
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
from nphm.data.synthetic.writer import (
    SOURCES,
    GenerationReport,
    SyntheticSource,
    generate_dataset,
    get_source,
    split_subjects,
)

__all__ = [
    "EXPRESSION_TYPES",
    "NEUTRAL_CLOSED",
    "NEUTRAL_OPEN",
    "SOURCES",
    "ExpressionParams",
    "GenerationReport",
    "IdentityParams",
    "ScanItem",
    "SyntheticSource",
    "SyntheticSubject",
    "Template",
    "TemplateMetadata",
    "apply_expression",
    "generate_dataset",
    "get_metadata",
    "get_source",
    "get_template",
    "head_sdf",
    "identity_warp",
    "sample_expression",
    "sample_identity",
    "split_subjects",
]
