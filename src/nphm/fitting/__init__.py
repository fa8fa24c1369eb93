"""Fitting NPHM / NPM to point clouds: root finding through the forward deformation, joint
identity and expression fitting, fitting a dataset's test subjects and your own scans.

Modules:

- :mod:`~nphm.fitting.config`: :class:`FittingConfig` (a ``configs/fitting_*.yaml``: the
  experiments and the settings);
- :mod:`~nphm.fitting.schedule`: :class:`FittingSettings` (the ``fitting:`` block of the configs),
  schedules of learning rate, loss weights and SDF clamp;
- :mod:`~nphm.fitting.broyden`: batched Broyden root finding with an active set;
- :mod:`~nphm.fitting.implicit`: canonical correspondences of observed points
  (:func:`find_canonical`) and the implicit gradient (:func:`implicit_canonical`);
- :mod:`~nphm.fitting.joint`: :func:`fit_joint` (identity + one expression per observation),
  :func:`fit_identity` (neutral scans), :func:`fit_expressions` (a known identity's new scans),
  :func:`fit_sequence` (ordered frames, warm-start chain with smoothness);
- :mod:`~nphm.fitting.pose`: the pose of the observations refined in the fit (:class:`PoseSettings`,
  :class:`ScanPose`);
- :mod:`~nphm.fitting.losses`: loss terms, the robust surface loss (:func:`geman_mcclure`);
- :mod:`~nphm.fitting.crop`: cropping a scan to the head (:func:`crop_head`, neck planes);
- :mod:`~nphm.fitting.pipeline`: fitting the test subjects of a dataset, random samples;
- :mod:`~nphm.fitting.custom` / :mod:`~nphm.fitting.alignment`: your own scans in any frame;
- :mod:`~nphm.fitting.io`, :mod:`~nphm.fitting.meshing`: models, outputs, meshes (the pictures
  of fits: :func:`nphm.pictures.fit_figure`; the results layout: :mod:`nphm.layout`).

The speed comparison with the straightforward release-style step of :mod:`nphm.reference.fitting`
is a run: :mod:`nphm.experiments.fitting_speed`.
"""
from nphm.fitting.broyden import BroydenResult, broyden
from nphm.fitting.config import FittingConfig
from nphm.fitting.crop import crop_head, mean_head_neck_plane, model_neck_plane, neck_plane_for
from nphm.fitting.implicit import (
    ForwardDeformation,
    RootCache,
    RootFindingResult,
    find_canonical,
    implicit_canonical,
)
from nphm.fitting.joint import (
    FitResult,
    ObservationSet,
    fit_expressions,
    fit_identity,
    fit_joint,
    fit_sequence,
    identity_loss,
    joint_loss,
)
from nphm.fitting.losses import geman_mcclure, surface_penalty
from nphm.fitting.pose import PoseSettings, ScanPose, compose, pose_errors
from nphm.fitting.schedule import BroydenSettings, FittingSettings

__all__ = [
    "BroydenResult",
    "BroydenSettings",
    "FitResult",
    "FittingConfig",
    "FittingSettings",
    "ForwardDeformation",
    "ObservationSet",
    "PoseSettings",
    "RootCache",
    "RootFindingResult",
    "ScanPose",
    "broyden",
    "compose",
    "crop_head",
    "find_canonical",
    "fit_expressions",
    "fit_identity",
    "fit_joint",
    "fit_sequence",
    "geman_mcclure",
    "identity_loss",
    "implicit_canonical",
    "joint_loss",
    "mean_head_neck_plane",
    "model_neck_plane",
    "neck_plane_for",
    "pose_errors",
    "surface_penalty",
]
