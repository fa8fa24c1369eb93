"""How well a trained experiment reproduces its training scans (a check of the training, not
the benchmark: the benchmark fits held-out people from single views).

Identity: the mesh of each training subject's latent against its neutral-open scan.
Expressions: the canonical mesh of the subject posed by each training expression latent
against that expression's scan. Both use the evaluation protocol of
:func:`nphm.evaluation.pipeline.evaluate_scan` (rendered samples, neck cut, metrics in mm).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import trimesh

from nphm.checkpoints import available_epochs, load_config, load_expression, load_identity, read_checkpoint
from nphm.query import deform_points
from nphm.reconstruction import FITTING_BOUNDS, mesh_identity
from nphm.training.latents import renormalized
from nphm.utils.io import PathLike, save_mesh


def _latest(exp_dir: Path, epoch: Optional[int]) -> int:
    if epoch is not None:
        return int(epoch)
    epochs = available_epochs(exp_dir)
    if not epochs:
        raise FileNotFoundError(f"no checkpoints in {exp_dir}")
    return epochs[-1]


def _evaluate(manager, subject: int, expression: int, mesh: trimesh.Trimesh, settings, out_dir: Optional[Path],
              tag: str) -> Dict[str, float]:
    from nphm.evaluation.pipeline import evaluate_scan

    result = evaluate_scan(manager, subject, expression, mesh, settings)
    if out_dir is not None:
        from nphm.pictures import scan_figure

        save_mesh(out_dir / f"{tag}_{subject}_{expression}.ply", mesh)
        scan_figure(out_dir / f"{tag}_{subject}_{expression}.png", result, mesh, manager=manager,
                    input_points=np.zeros((0, 3)))
    return {"subject": subject, "expression": expression, **result.metrics,
            **{f"face_{k}": v for k, v in result.metrics_face.items()}}


def identity_fit(exp_dir: PathLike, manager, epoch: Optional[int] = None, subjects: Optional[Sequence[int]] = None,
                 resolution: int = 256, settings=None, out_dir: Optional[PathLike] = None,
                 device: Union[str, torch.device] = "cpu") -> List[Dict[str, float]]:
    """Metrics (mm) of the training subjects' identity meshes against their neutral scans.

    Args:
        exp_dir: stage-1 experiment; epoch: its checkpoint (default newest).
        subjects: training subjects to check (default all).
        settings: :class:`nphm.evaluation.pipeline.EvalSettings` (default: the release protocol).
        out_dir: if given, meshes and report PNGs are written there.
    """
    from nphm.evaluation.pipeline import EvalSettings

    exp_dir = Path(exp_dir)
    epoch = _latest(exp_dir, epoch)
    settings = settings or EvalSettings()
    model, latents = load_identity(exp_dir, epoch, device)
    ckpt = read_checkpoint(exp_dir, epoch)
    listed = [int(s) for s in ckpt.get("subjects_train", manager.subjects("train"))]
    out = []
    for s in subjects if subjects is not None else listed:
        row = listed.index(int(s))
        e = manager.neutral_expression(s)
        z = renormalized(latents["train"][row][None])[0]
        mesh = mesh_identity(model, z, resolution=resolution, bounds=FITTING_BOUNDS, device=device)
        out.append(_evaluate(manager, s, e, mesh, settings, Path(out_dir) if out_dir else None, "identity"))
    return out


def expression_fit(exp_dir: PathLike, manager, epoch: Optional[int] = None,
                   items: Optional[Sequence[Sequence[int]]] = None, resolution: int = 256, settings=None,
                   out_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu"
                   ) -> List[Dict[str, float]]:
    """Metrics (mm) of posed training meshes against their scans.

    Args:
        exp_dir: stage-2 experiment (its config names the stage-1 experiment and epoch).
        items: training ``(subject, expression)`` pairs to check (default all).
    """
    from nphm.evaluation.pipeline import EvalSettings

    exp_dir = Path(exp_dir)
    epoch = _latest(exp_dir, epoch)
    settings = settings or EvalSettings()
    cfg = load_config(exp_dir)
    id_dir = exp_dir.parent / cfg["training"]["shape_exp_name"]
    id_epoch = int(cfg["training"]["shape_ckpt"])
    identity, id_latents = load_identity(id_dir, id_epoch, device)
    deformation, ex_latents = load_expression(exp_dir, epoch, device)
    ckpt = read_checkpoint(exp_dir, epoch)
    id_ckpt = read_checkpoint(id_dir, id_epoch)
    subjects = [int(s) for s in id_ckpt["subjects_train"]]
    all_items = [tuple(map(int, it)) for it in ckpt["items_train"]]
    wanted = all_items if items is None else [tuple(map(int, it)) for it in items]
    canonical: Dict[int, trimesh.Trimesh] = {}
    out = []
    for s, e in wanted:
        k = subjects.index(s)
        z_id = renormalized(id_latents["train"][k][None])[0]  # what training saw (embedding lookup)
        if s not in canonical:
            canonical[s] = mesh_identity(identity, z_id, resolution=resolution, bounds=FITTING_BOUNDS, device=device)
        base = canonical[s]
        verts = torch.as_tensor(np.asarray(base.vertices), dtype=torch.float32, device=device)
        with torch.inference_mode():
            anchors = identity.anchors(z_id[None])
        posed = deform_points(deformation, verts, z_id, ex_latents["train"][all_items.index((s, e))], anchors)
        mesh = trimesh.Trimesh(posed.cpu().numpy(), np.asarray(base.faces), process=False)
        out.append(_evaluate(manager, s, e, mesh, settings, Path(out_dir) if out_dir else None, "expression"))
    return out


def summarize(rows: List[Dict[str, float]], keys: Sequence[str] = ("chamfer_l1", "face_chamfer_l1",
                                                                   "normals consistency", "f_score_05")
              ) -> Dict[str, float]:
    """Means over rows of the given metric keys."""
    return {k: float(np.mean([r[k] for r in rows])) for k in keys if rows and k in rows[0]}
