"""Cropping a scan to the head: what the model has no shape for is removed before the fit.

A scan of a person holds shoulders, torso, hair and background the model cannot explain: fitted
with the release's L1 surface loss they pull the neck down and the head out of shape. The
dataset's observations are cut at the scan's throat plane (the plane through three FLAME
vertices under the chin, :meth:`nphm.data.DataManager.throat_plane`), so the models never saw
anything below it; :func:`crop_head` cuts a scan the same way, and to the fitting box.

Where the neck plane comes from (:func:`neck_plane_for`, first available):

1. the dataset: ``DataManager.throat_plane(subject, expression)`` of a dataset scan (its FLAME
   fit);
2. the model's mean head: the throat plane of the shipped real-scan head model
   (:func:`nphm.data.heads.load_ict_model`, whose neutral is the population mean in the real
   nphm frame, fitted to the release's mean anchors), carried onto the model's own mean head
   by the similarity that maps the head model's 39 NPHM anchors onto the model's anchors at
   ``z = 0`` (NPHM's ``identity.anchors``); a model without anchors (NPM) takes the plane as it
   is (:func:`mean_head_neck_plane`);
3. none: the box only.

The plane of a mean head fits a person only roughly (the neck's length varies by a few
centimetres); a negative ``margin`` keeps a band below it. The crop acts on the points in the
nphm frame as the start alignment put them; a pose refined in the fit
(:mod:`nphm.fitting.pose`) does not re-crop.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

Plane = Tuple[np.ndarray, np.ndarray]
#: mean distance (nphm units, 10 mm) of the anchors from the mapped mean-head anchors above which
#: :func:`mean_head_neck_plane` refuses them (the release's mean anchors: 0.011, 2.7 mm)
ANCHOR_MISMATCH = 0.04
Box = Tuple[Sequence[float], Sequence[float]]


def crop_head(
    points,
    box: Optional[Box] = None,
    neck_plane: Optional[Plane] = None,
    margin: float = 0.0,
) -> np.ndarray:
    """Which points to keep: inside the box and above the neck plane.

    Args:
        points: (N, 3) in the nphm frame (numpy or torch).
        box: ``(min (3,), max (3,))``, bounds included (default: the fitting box of
            :class:`nphm.fitting.schedule.FittingSettings`, ``grid_min``/``grid_max``).
        neck_plane: ``(origin (3,), normal (3,))``; the normal points to the head and need not
            be of unit length. None: the box only.
        margin: nphm units along the *unit* normal: kept are points with
            ``(p - origin) . n / |n| > margin`` (negative: keep a band below the plane). Unlike
            :meth:`nphm.data.DataManager.neck_keep_mask`, whose margin is along the release's
            un-normalised normal.
    Returns:
        bool (N,), True = keep; points with a NaN or infinite coordinate are never kept.
    """
    if box is None:
        from nphm.fitting.schedule import FittingSettings

        box = (FittingSettings().grid_min, FittingSettings().grid_max)
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    p = p.astype(np.float64, copy=False)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {p.shape}")
    lo, hi = (np.asarray(b, dtype=np.float64).reshape(3) for b in box)
    if np.any(lo > hi):
        raise ValueError(f"box minimum {lo.tolist()} exceeds its maximum {hi.tolist()}")
    keep = np.all((p >= lo) & (p <= hi), axis=1)
    if neck_plane is not None:
        origin, normal = (np.asarray(v, dtype=np.float64).reshape(3) for v in neck_plane)
        length = float(np.linalg.norm(normal))
        if not length > 0 or not np.isfinite(length):
            raise ValueError(f"neck plane normal {normal.tolist()} has no direction")
        keep &= (p - origin) @ (normal / length) > float(margin)
    return keep


def mean_head_neck_plane(anchors: Optional[np.ndarray] = None) -> Plane:
    """``(origin (3,), unit normal (3,))`` of the mean head's throat plane in the nphm frame.

    The plane of the shipped real-scan head model's neutral; with ``anchors`` (39, 3) (a model's
    mean anchors, release order) mapped by the Umeyama similarity from that head's anchors onto
    them.

    Raises:
        ValueError: the anchors do not match the mean head's (mean distance above
            :data:`ANCHOR_MISMATCH` after the similarity).
    """
    from nphm.data.frames import umeyama
    from nphm.data.heads import load_ict_model

    head = load_ict_model()
    origin, normal = head.throat_plane()
    if anchors is None:
        return origin.copy(), normal.copy()
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 3)
    own = head.anchors()
    if anchors.shape != own.shape:
        raise ValueError(f"need the {len(own)} anchors of the mean head, got {anchors.shape}")
    T = umeyama(own, anchors)
    residual = float(np.linalg.norm(T.apply(own) - anchors, axis=1).mean())
    if residual > ANCHOR_MISMATCH:
        raise ValueError(f"the anchors lie {residual:.3f} nphm units (mean) from the mean head's after the best "
                         "similarity: not the release's 39 anchors? Give the neck plane explicitly")
    n = T.apply_offsets(normal)
    return T.apply(origin[None])[0], n / np.linalg.norm(n)


def model_neck_plane(identity: nn.Module) -> Plane:
    """The neck plane of a model's mean head (``z = 0``): :func:`mean_head_neck_plane` carried
    to its anchors when it has the 39 anchors, else the plane as it is."""
    anchors = None
    if hasattr(identity, "anchors"):
        p = next(identity.parameters(), None)
        z = torch.zeros(1, identity.lat_dim, device=None if p is None else p.device)
        with torch.no_grad():
            a = identity.anchors(z)
        if a is not None and a.shape[-2:] == (39, 3):
            anchors = a[0].cpu().double().numpy()
    return mean_head_neck_plane(anchors)


def neck_plane_for(
    identity: Optional[nn.Module] = None,
    manager=None,
    subject: Optional[int] = None,
    expression: Optional[int] = None,
) -> Optional[Plane]:
    """The neck plane by the rule of the module docstring: the dataset scan's throat plane
    when ``manager``, ``subject`` and ``expression`` are given, else the mean head's plane
    of ``identity`` when given, else None (crop to the box only)."""
    if manager is not None and subject is not None and expression is not None:
        origin, normal = manager.throat_plane(subject, expression)
        return np.asarray(origin, dtype=np.float64), np.asarray(normal, dtype=np.float64)
    if identity is not None:
        return model_neck_plane(identity)
    return None
