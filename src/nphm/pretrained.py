"""Compact copies of trained experiments, for shipping small pretrained models.

:func:`export_compact` copies one checkpoint of an experiment into a new experiment folder in the
same (official) layout, ``configs.yaml`` + ``checkpoints/checkpoint_epoch_{N}.tar``, but keeps only
what inference and fitting need: the decoder weights, the training/validation latents, the mean
anchors of NPHM identity models and the lists saying which subject/scan each latent row belongs
to. Optimiser, scheduler and random-number states are dropped and floating-point tensors are
stored as float32, so a compact copy loads with :func:`nphm.checkpoints.load_identity` /
:func:`~nphm.checkpoints.load_expression` (and the fitting) but cannot resume training.

:func:`held_out_fingerprints` records a few registration vertices of the held-out (test)
subjects of a synthetic training set; :func:`fingerprint_mismatches` checks regenerated subjects
against them (the demo regenerates test heads instead of shipping them).

:func:`write_landmark_reference` writes the reference positions of the landmark sets that
:mod:`nphm.fitting.landmarks` understands (68 iBUG, 51, 39 NPHM anchors) into an exported
models folder: the means over the training subjects' neutral registrations and the anchors of
the NPHM identity models at z = 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from nphm.checkpoints import (
    MEAN_ANCHORS_KEY,
    available_epochs,
    checkpoint_path,
    load_config,
    read_checkpoint,
    save_config,
)
from nphm.fitting.landmarks import reference_path, write_reference_file
from nphm.utils.io import PathLike, atomic_path


#: Top-level checkpoint entries kept by :func:`export_compact` (tensors or small lists).
KEPT_KEYS = (
    "epoch",
    "decoder_state_dict",
    "latent_codes_state_dict",
    "latent_codes_val_state_dict",
    MEAN_ANCHORS_KEY,
    "subjects_train",
    "subjects_val",
    "expressions_train",
    "expressions_val",
    "items_train",
    "items_val",
)
#: Release keys that a compact checkpoint stores as None (nothing to resume from).
EMPTY_KEYS = ("optimizer_encoder_state_dict", "optimizer_lat_state_dict", "optimizer_lat_val_state_dict")


def _float32(value: Any) -> Any:
    """``value`` with every floating-point tensor (also inside dicts) cast to float32, contiguous."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.float().contiguous() if value.is_floating_point() else value.contiguous()
    if isinstance(value, dict):  # keeps OrderedDict state dicts ordered
        return type(value)((k, _float32(v)) for k, v in value.items())
    return value


def compact_checkpoint(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The compact form of a loaded checkpoint dict (see the module docstring)."""
    out: Dict[str, Any] = {k: _float32(ckpt[k]) for k in KEPT_KEYS if k in ckpt}
    for key in EMPTY_KEYS:
        out[key] = None
    out.setdefault("latent_codes_val_state_dict", None)
    return out


def export_compact(
    src_exp_dir: PathLike,
    dst_exp_dir: PathLike,
    epoch: Optional[int] = None,
    overwrite: bool = False,
    renamed: Optional[Mapping[str, str]] = None,
) -> Path:
    """Copy checkpoint ``epoch`` (default: the newest) of ``src_exp_dir`` compactly to ``dst_exp_dir``.

    Writes ``dst_exp_dir/configs.yaml`` (the source's config) and
    ``dst_exp_dir/checkpoints/checkpoint_epoch_{epoch}.tar``, both atomically. Stage-2 configs
    keep ``training.shape_exp_name``/``shape_ckpt``: export the identity experiment under the
    same name and epoch beside it, or pass ``renamed`` (source name -> exported name of the
    experiments exported together), which rewrites ``shape_exp_name`` accordingly.

    Returns:
        the path of the written checkpoint.
    Raises:
        FileNotFoundError: no such experiment or checkpoint.
        FileExistsError: ``dst_exp_dir`` already holds a checkpoint and not ``overwrite``.
    """
    src, dst = Path(src_exp_dir), Path(dst_exp_dir)
    if src.resolve() == dst.resolve():
        raise ValueError(f"source and destination are the same folder: {src}")
    cfg = load_config(src)
    if epoch is None:
        epochs = available_epochs(src)
        if not epochs:
            raise FileNotFoundError(f"no checkpoints in {src / 'checkpoints'}")
        epoch = epochs[-1]
    existing = available_epochs(dst)
    if existing and not overwrite:
        raise FileExistsError(f"{dst} already holds checkpoints (epochs {existing}); pass overwrite to replace them")
    compact = compact_checkpoint(read_checkpoint(src, int(epoch)))
    training = cfg.get("training") if isinstance(cfg, dict) else None
    if renamed and isinstance(training, dict) and training.get("shape_exp_name") in renamed:
        training["shape_exp_name"] = renamed[training["shape_exp_name"]]
    save_config(dst, cfg)
    path = checkpoint_path(dst, int(epoch))
    with atomic_path(path) as tmp:
        torch.save(compact, tmp)
    for old in existing:  # overwrite: the folder holds exactly the exported epoch
        if old != int(epoch):
            checkpoint_path(dst, old).unlink()
    return path


# ------------------------------------------------------------------------ training-set fingerprints
#: Number of registration vertices recorded per test subject by :func:`held_out_fingerprints`.
N_FINGERPRINT_VERTICES = 32


def _fingerprint_vertices(manager, subject: int) -> Tuple[int, List[int], np.ndarray]:
    expression = manager.neutral_expression(subject, "open")
    vertices = np.asarray(manager.load_registration(subject, expression).vertices, dtype=np.float64)
    ids = np.linspace(0, len(vertices) - 1, N_FINGERPRINT_VERTICES).round().astype(int)
    return expression, ids.tolist(), vertices[ids]


def held_out_fingerprints(manager, subjects: Sequence[int]) -> Dict[str, Dict[str, Any]]:
    """A few neutral-registration vertices per subject (nphm frame), so that a regenerated
    synthetic test subject can be checked against the one a model was held out from.

    Returns:
        ``{str(subject): {"expression": e, "vertex_ids": [...], "vertices": [[x, y, z], ...]}}``.
    """
    out = {}
    for subject in subjects:
        expression, ids, verts = _fingerprint_vertices(manager, int(subject))
        out[str(int(subject))] = {"expression": expression, "vertex_ids": ids,
                                  "vertices": np.round(verts, 7).tolist()}
    return out


def fingerprint_mismatches(manager, fingerprints: Mapping[str, Mapping[str, Any]], subjects: Sequence[int],
                           tol: float = 1e-5) -> List[str]:
    """Subjects of ``subjects`` whose data differ from ``fingerprints`` (one message each;
    subjects without a fingerprint are not checked)."""
    problems = []
    for subject in subjects:
        entry = fingerprints.get(str(int(subject)))
        if entry is None:
            continue
        mesh = manager.load_registration(int(subject), int(entry["expression"]))
        ids = np.asarray(entry["vertex_ids"], dtype=int)
        if ids.max() >= len(mesh.vertices):
            problems.append(f"subject {subject}: registration has {len(mesh.vertices)} vertices, the fingerprint "
                            f"needs vertex {ids.max()}")
            continue
        diff = float(np.abs(np.asarray(mesh.vertices)[ids] - np.asarray(entry["vertices"])).max())
        if diff > tol:
            problems.append(f"subject {subject}: registration differs by up to {diff:.2e} nphm units")
    return problems


# ------------------------------------------------------------------------ landmark reference
def mean_registration_landmarks(manager, subjects: Optional[Sequence[int]] = None,
                                kind: str = "open") -> Dict[str, Any]:
    """Means over subjects' neutral registrations (nphm frame) of the 68 landmarks and the 39 anchors.

    Args:
        manager: a :class:`nphm.data.DataManager` (``load_registration``, ``neutral_expression``
            and ``description`` with the landmark and anchor vertex indices).
        subjects: default the training subjects (``manager.subjects("train")``).
        kind: the neutral expression, "open" (the models' neutral) or "closed".
    Returns:
        ``{"landmarks_68": (68, 3), "anchors_39": (39, 3), "spread_68": (68,), "spread_39": (39,),
        "subjects": [...]}``; the spreads are per-point RMS distances to the mean (nphm units).
    Raises:
        ValueError: no subject, or a registration with too few vertices.
    """
    subjects = [int(s) for s in (manager.subjects("train") if subjects is None else subjects)]
    if not subjects:
        raise ValueError("no subjects to average landmarks over")
    d = manager.description
    ids = {"landmarks_68": np.asarray(d.landmark_vertex_indices_registration_68, dtype=int),
           "anchors_39": np.asarray(d.anchor_vertex_indices_registration, dtype=int)}
    stacks: Dict[str, List[np.ndarray]] = {k: [] for k in ids}
    for subject in subjects:
        expression = manager.neutral_expression(subject, kind)
        vertices = np.asarray(manager.load_registration(subject, expression).vertices, dtype=np.float64)
        for key, index in ids.items():
            if index.max() >= len(vertices):
                raise ValueError(f"subject {subject}, expression {expression}: registration has {len(vertices)} "
                                 f"vertices, {key} needs vertex {index.max()}")
            stacks[key].append(vertices[index])
    out: Dict[str, Any] = {"subjects": subjects}
    for key, stack in stacks.items():
        points = np.stack(stack)  # (S, L, 3)
        mean = points.mean(axis=0)
        out[key] = mean
        out["spread_" + key[-2:]] = np.sqrt(((points - mean) ** 2).sum(-1).mean(0))
    return out


def identity_anchors_at_zero(model: torch.nn.Module) -> Optional[np.ndarray]:
    """(K, 3) anchors of an NPHM identity model at ``z = 0`` (nphm frame); None for models
    without anchors (NPM)."""
    if not hasattr(model, "n_loc") or not hasattr(model, "anchors"):
        return None
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.anchors(torch.zeros(1, model.lat_dim, device=device))[0].double().cpu().numpy()


def _identity_models(models_dir: PathLike, names: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, Path, Any]]:
    """``(name, folder, model)`` of the identity experiments in ``models_dir`` (``names``, default
    every experiment folder; deformation experiments are skipped), each at its newest epoch."""
    from nphm.checkpoints import load_identity

    root = Path(models_dir)
    names = sorted(p.name for p in root.iterdir() if (p / "configs.yaml").is_file()) if names is None else names
    for name in names:
        exp = root / name
        epochs = available_epochs(exp)
        if not epochs or "ex_decoder" in load_config(exp):
            continue
        model, _ = load_identity(exp, epochs[-1])
        yield name, exp, model


def exported_identity_anchors(models_dir: PathLike, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """``{name: (39, 3)}`` anchors at z = 0 of the NPHM identity experiments in ``models_dir``
    (``names``, default every experiment folder; deformation and NPM experiments are skipped)."""
    out = {}
    for name, _, model in _identity_models(models_dir, names):
        anchors = identity_anchors_at_zero(model)
        if anchors is not None and anchors.shape == (39, 3):
            out[name] = anchors
    return out


def write_mean_heads(models_dir: PathLike, names: Optional[Sequence[str]] = None) -> List[Path]:
    """Store the mean head of every identity experiment in ``models_dir`` (``names``, default
    all; deformation experiments are skipped) beside its checkpoints
    (:func:`nphm.fitting.custom.write_mean_head`): the automatic alignment's reference surface,
    read instead of computed when the same model fits a scan. Returns the written paths."""
    from nphm.fitting.custom import write_mean_head

    return [write_mean_head(exp, model.eval()) for _, exp, model in _identity_models(models_dir, names)]


def write_landmark_reference(models_dir: PathLike, manager, names: Optional[Sequence[str]] = None,
                             subjects: Optional[Sequence[int]] = None) -> Path:
    """Write ``models_dir/landmarks_reference.json`` (:mod:`nphm.fitting.landmarks`) from the
    training set of the models in ``models_dir``.

    Args:
        manager: the :class:`~nphm.data.DataManager` of the training set.
        names: identity experiments whose z = 0 anchors to store (default: all in ``models_dir``).
        subjects: default the training subjects.
    Returns:
        the written path.
    """
    means = mean_registration_landmarks(manager, subjects)
    d = manager.description
    source = {"dataset": d.name, "subjects": means["subjects"], "expression": "neutral open registration",
              "landmark_vertex_indices": "description: landmark_vertex_indices_registration_68, "
                                         "anchor_vertex_indices_registration"}
    synthetic = (getattr(d, "extra", None) or {}).get("synthetic")
    if isinstance(synthetic, dict):
        source["synthetic"] = {k: synthetic[k] for k in ("seed", "generator_version", "n_subjects", "n_expressions")
                               if k in synthetic}
    return write_reference_file(reference_path(models_dir), means["landmarks_68"], means["anchors_39"],
                                exported_identity_anchors(models_dir, names), means["spread_68"],
                                means["spread_39"], source)


__all__ = [
    "KEPT_KEYS",
    "EMPTY_KEYS",
    "compact_checkpoint",
    "export_compact",
    "fingerprint_mismatches",
    "held_out_fingerprints",
    "mean_registration_landmarks",
    "identity_anchors_at_zero",
    "exported_identity_anchors",
    "write_landmark_reference",
]
