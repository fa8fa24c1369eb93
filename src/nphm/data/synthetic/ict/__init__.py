"""Realistic synthetic heads from the ICT Face Model Light, in the NPHM dataset layout.

Subjects are the model's identities (100 PCA modes of real light-stage scans, N(0, 1)
weights) with a hair layer (close-cropped to voluminous, fringes, buns), the release's
expression vocabulary made of the kit's ARKit shapes, and scans as a scanner sees them (the
visible outer surface of skin + hair, eyeballs, mouth interior and teeth; finer, noisy, holes
under the chin, cut at the neck). Registration and FLAME-like meshes have fixed topologies
with exact correspondences (:mod:`.topology`). Everything is in the real nphm frame, the
frame of the release's mean anchors (:mod:`nphm.data.heads`).

Modules: ``subdivision`` (Loop step as a sparse map), ``topology`` (registration, FLAME-like
and scan-union meshes), ``hair`` (styles and the hair layer), ``identity`` (weights + hair
style), ``expression`` (vocabulary -> ARKit weights), ``scan`` (what a scanner sees),
``metadata`` (index tables), ``subject`` (one subject in memory).

Typical use::

    from nphm.data.synthetic import generate_dataset
    generate_dataset("work/ict", n_subjects=200, n_expressions=8, seed=0, workers=2, source="ict")
    item = IctSubject(subject=3, seed=0).item(expression=4)   # in memory: a ScanItem
"""
from typing import Dict

from nphm.data.synthetic.ict.expression import IctExpression, expression_weights, sample_expression
from nphm.data.synthetic.ict.hair import HairStyle, hair_thickness, sample_hair_style
from nphm.data.synthetic.ict.identity import IctIdentity, sample_identity
from nphm.data.synthetic.ict.metadata import get_ict_metadata, template_meshes
from nphm.data.synthetic.ict.scan import ScannerRig, scan_mesh
from nphm.data.synthetic.ict.subject import IctSubject, identity_basis, template_scalp
from nphm.data.synthetic.ict.topology import IctTopology, get_topology
from nphm.data.synthetic.writer import SyntheticSource

#: bump when the ICT source's output changes (recorded in synthetic.json / dataset.json)
ICT_GENERATOR_VERSION = 1


def _prepare() -> None:
    from nphm.data.heads import load_ict_model

    identity_basis(load_ict_model())
    template_scalp(load_ict_model(), get_topology())
    get_ict_metadata()


def _n_vertices() -> Dict[str, int]:
    topo = get_topology()
    return {"registration": topo.n_registration, "flame": topo.n_flame, "scan_union": topo.n_model_vertices}


#: the ``"ict"`` source of :func:`nphm.data.synthetic.generate_dataset`
ICT_SOURCE = SyntheticSource(name="ict", generator_version=ICT_GENERATOR_VERSION, subject=IctSubject,
                             metadata=get_ict_metadata, templates=template_meshes, n_vertices=_n_vertices,
                             prepare=_prepare)

__all__ = [
    "ICT_GENERATOR_VERSION",
    "ICT_SOURCE",
    "HairStyle",
    "IctExpression",
    "IctIdentity",
    "IctSubject",
    "IctTopology",
    "ScannerRig",
    "expression_weights",
    "get_ict_metadata",
    "get_topology",
    "hair_thickness",
    "sample_expression",
    "sample_hair_style",
    "sample_identity",
    "scan_mesh",
    "template_meshes",
]
