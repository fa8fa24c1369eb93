"""Speed of NPHM identity queries and of mesh extraction, against the straightforward way.

The model is the release-size NPHM identity network (40 members of 4 x 200, anchor MLP 256)
with random weights and a random latent of trained-like scale, briefly fitted so that its zero
level set is a closed head-sized surface: the analytic head of :func:`nphm.analytic.head_sdf`
with its 39 keypoints as mean anchors. Everything is measured in one process, and results are
reported as ratios to the straightforward ("naive") evaluation of
:func:`nphm.reference.models.naive_nphm_sdf` (every member on every point, latent copied to
every point, as the release does).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import trimesh
from tqdm import tqdm

from nphm.analytic import head_anchor_layout, head_sdf
from nphm.experiments.timing import peak_memory_mb, reset_peak_memory, time_call
from nphm.evaluation.metrics import vertex_set_distance
from nphm.mesh import DEFAULT_LIPSCHITZ, extract_mesh
from nphm.models import NPHMIdentity
from nphm.reference.models import naive_nphm_sdf
from nphm.query import sdf_function
from nphm.reconstruction import FITTING_BOUNDS
from nphm.utils.io import atomic_path
from nphm.utils.tables import markdown_table

#: Meshes count as identical when their faces are equal and their vertices differ by at most
#: this (nphm units): the extraction modes batch points differently, which changes float32 sums.
MESH_ROUNDING = 1e-6


@dataclass
class SpeedSettings:
    """What the speed benchmark runs (defaults: the numbers reported in the README)."""

    n_points: int = 32768  # points per throughput measurement (exact / sparse)
    n_points_naive: int = 4096  # the naive path is slow: fewer points, same per-point cost
    latent_std: float = 0.03  # trained latents have norm <= 1 (max_norm): ~1/sqrt(1344) per dim
    fit_steps: int = 80
    fit_points: int = 3072
    fit_lr: float = 1e-3
    resolutions: Tuple[int, ...] = (128, 256)
    dense_resolution: int = 128  # dense extraction is measured here, extrapolated above
    repeats: int = 3  # timed calls per throughput measurement (best counts)
    mesh_repeats: int = 1  # timed extractions per mesh row (the median counts)
    seed: int = 0


@dataclass
class SpeedResults:
    settings: Dict = field(default_factory=dict)
    device: str = "cpu"
    fit_loss: float = float("nan")
    throughput: Dict[str, Dict[str, float]] = field(default_factory=dict)
    max_abs_diff: Dict[str, float] = field(default_factory=dict)
    meshes: List[Dict[str, float]] = field(default_factory=list)
    peak_memory_mb: Dict[str, float] = field(default_factory=dict)


def release_size_nphm(device: torch.device) -> NPHMIdentity:
    """Release-size NPHM identity model with the analytic head's keypoints as mean anchors."""
    return NPHMIdentity(anchors_mean=head_anchor_layout()).to(device)


def _surface_samples(n: int, generator: torch.Generator, mesh: trimesh.Trimesh, device) -> torch.Tensor:
    idx = torch.randint(0, len(mesh.vertices), (n,), generator=generator)
    return torch.as_tensor(np.asarray(mesh.vertices, dtype=np.float32))[idx].to(device)


def fit_to_head(
    model: NPHMIdentity, z: torch.Tensor, settings: SpeedSettings, device: torch.device, progress: bool = True
) -> float:
    """Briefly fit the network (not the latent) to the analytic head SDF; returns the last loss.

    Loss: L1 between SDFs clamped to +-0.1 on near-surface points (surface + N(0, 0.02)) and
    points uniform in the fitting box, as in DeepSDF.
    """
    gen = torch.Generator().manual_seed(settings.seed + 1)
    head_mesh = extract_mesh(head_sdf, *FITTING_BOUNDS, resolution=96, device="cpu", lipschitz=1.5)
    lo, hi = (torch.tensor(b, device=device) for b in FITTING_BOUNDS)
    opt = torch.optim.Adam(model.parameters(), lr=settings.fit_lr)
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(settings.fit_steps), desc="fit to analytic head", disable=not progress)
    for _ in bar:
        n_near = settings.fit_points * 3 // 4
        near = _surface_samples(n_near, gen, head_mesh, device)
        near = near + torch.randn(near.shape, generator=gen).to(device) * 0.02
        uniform = lo + (hi - lo) * torch.rand(settings.fit_points - n_near, 3, generator=gen).to(device)
        pts = torch.cat([near, uniform])
        target = head_sdf(pts).clamp(-0.1, 0.1)
        pred = model(pts[None], z, mode="sparse")[0][0, :, 0]
        loss = (pred.clamp(-0.1, 0.1) - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        bar.set_postfix(l1=f"{loss_value:.4f}")
    model.eval()
    return loss_value


def load_or_fit(
    settings: SpeedSettings, device: torch.device, cache: Optional[Path], refit: bool, progress: bool
) -> Tuple[NPHMIdentity, torch.Tensor, float]:
    """The fitted benchmark model and latent, from ``cache`` when it matches the settings."""
    torch.manual_seed(settings.seed)
    model = release_size_nphm(device)
    z = (torch.randn(1, model.lat_dim) * settings.latent_std).to(device)
    key = {k: getattr(settings, k) for k in ("latent_std", "fit_steps", "fit_points", "fit_lr", "seed")}
    if cache is not None and cache.is_file() and not refit:
        saved = torch.load(cache, map_location=device, weights_only=True)
        if saved.get("key") == key:
            model.load_state_dict(saved["state"])
            return model.eval(), saved["z"].to(device), float(saved["loss"])
    loss = fit_to_head(model, z, settings, device, progress)
    if cache is not None:
        with atomic_path(cache) as tmp:
            torch.save({"key": key, "state": model.state_dict(), "z": z.cpu(), "loss": loss}, tmp)
    return model, z, loss


def run_speed_benchmark(
    settings: SpeedSettings,
    device: torch.device,
    cache: Optional[Path] = None,
    refit: bool = False,
    progress: bool = True,
) -> SpeedResults:
    """Measure query throughput and mesh extraction; see the module docstring."""
    results = SpeedResults(settings=asdict(settings), device=str(device))
    model, z, results.fit_loss = load_or_fit(settings, device, cache, refit, progress)
    gen = torch.Generator().manual_seed(settings.seed + 2)
    lo, hi = (torch.tensor(b) for b in FITTING_BOUNDS)
    uniform = (lo + (hi - lo) * torch.rand(settings.n_points, 3, generator=gen)).to(device)

    with torch.inference_mode():
        ref_mesh = extract_mesh(sdf_function(model, z[0]), *FITTING_BOUNDS, resolution=96, device=device)
    near = _surface_samples(settings.n_points, gen, ref_mesh, device)
    near = near + torch.randn(near.shape, generator=gen).to(device) * 0.01

    for name, pts in (("uniform in fitting box", uniform), ("near the surface", near)):
        rates: Dict[str, float] = {}
        values: Dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            sub = pts[: settings.n_points_naive][None]
            fns = {"sparse": sdf_function(model, z[0], mode="sparse"), "exact": sdf_function(model, z[0], mode="exact")}
            calls = {
                "naive": lambda: naive_nphm_sdf(model, sub, z),
                "exact": lambda: fns["exact"](pts),
                "sparse": lambda: fns["sparse"](pts),
            }
            for mode, call in calls.items():
                reset_peak_memory(device)
                values[mode] = call().reshape(-1)
                results.peak_memory_mb[f"{mode} ({name})"] = peak_memory_mb(device)
            # One mode after the other, best of ``repeats`` after a warm-up call: interleaving them
            # made the naive path pay for the page faults of the exact path's gigabyte buffers.
            for mode, call in calls.items():
                t = time_call(call, device, repeats=settings.repeats, warmup=1)
                rates[mode] = (sub.shape[1] if mode == "naive" else pts.shape[0]) / t
        results.throughput[name] = rates
        if progress:
            tqdm.write(f"{name}: " + ", ".join(f"{k} {v:,.0f} pts/s ({v / rates['naive']:.1f}x)" for k, v in rates.items()))
        n = settings.n_points_naive
        results.max_abs_diff[f"sparse vs exact ({name})"] = float((values["sparse"] - values["exact"]).abs().max())
        results.max_abs_diff[f"exact vs naive ({name})"] = float((values["exact"][:n] - values["naive"]).abs().max())

    naive_rate = results.throughput["uniform in fitting box"]["naive"]
    dense_meshes = {}
    for res in settings.resolutions:
        modes = ["sparse", "sparse_auto", "traced_auto"] + (["dense"] if res <= settings.dense_resolution else [])
        for extraction in modes:
            reset_peak_memory(device)
            holder = {}

            def extract():  # timed with the per-latent set-up (anchors, member bounds)
                fn = sdf_function(model, z[0], mode="sparse")
                lipschitz = "auto" if extraction.endswith("_auto") else DEFAULT_LIPSCHITZ
                holder["mesh"] = extract_mesh(fn, *FITTING_BOUNDS, resolution=res, mode=extraction.split("_")[0],
                                              device=device, progress=progress and extraction == "dense",
                                              lipschitz=lipschitz)

            times = [time_call(extract, device, repeats=1, warmup=0) for _ in range(settings.mesh_repeats)]
            t = float(np.median(times))
            mesh = holder["mesh"]
            row = {
                "resolution": res,
                "extraction": extraction,
                "points_evaluated": mesh.metadata["n_evaluated"],
                "fraction_evaluated": mesh.metadata["n_evaluated"] / mesh.metadata["n_grid"],
                "seconds": t,
                "seconds_runs": times,
                "naive_dense_seconds_extrapolated": res**3 / naive_rate,
                "peak_memory_mb": peak_memory_mb(device),
                "vertices": len(mesh.vertices),
                "lipschitz": mesh.metadata["lipschitz"],
            }
            if progress:
                tqdm.write(f"mesh {res}^3 {extraction}: {row['points_evaluated']:,} points, {t:.1f} s "
                           f"(naive dense extrapolated {row['naive_dense_seconds_extrapolated']:,.0f} s)")
            if extraction == "dense":
                dense_meshes[res] = mesh
            else:
                row["sparse_mesh"] = mesh
            results.meshes.append(row)
    fixed = {row["resolution"]: row["sparse_mesh"] for row in results.meshes if row["extraction"] == "sparse"}
    for row in results.meshes:
        mesh = row.pop("sparse_mesh", None)
        if mesh is None:
            continue
        # the reference: the dense mesh where it was extracted, else the fixed-bound sparse one
        ref = dense_meshes.get(row["resolution"], fixed[row["resolution"]])
        row["reference"] = "dense" if row["resolution"] in dense_meshes else "sparse"
        # the same faces and vertices up to float32 rounding (the modes batch points differently)
        row["identical_to_reference"] = bool(
            np.array_equal(mesh.faces, ref.faces) and mesh.vertices.shape == ref.vertices.shape
            and np.abs(np.asarray(mesh.vertices) - np.asarray(ref.vertices)).max() <= MESH_ROUNDING)
        row["vertex_distance_to_reference"] = vertex_set_distance(np.asarray(mesh.vertices),
                                                                  np.asarray(ref.vertices))
    return results


def format_results(r: SpeedResults) -> str:
    """Markdown tables of the speed results, with ratios to the naive evaluation."""
    out = [f"Device: {r.device}. Fit of the benchmark network to the analytic head: L1 {r.fit_loss:.4f} (clamped SDF).", ""]
    rows = []
    for name, rates in r.throughput.items():
        for mode in ("naive", "exact", "sparse"):
            rows.append([name, mode, f"{rates[mode]:,.0f}", f"{rates[mode] / rates['naive']:.1f}x"])
    out += ["SDF queries (points per second; ratio to the naive all-members evaluation):", "",
            markdown_table(["points", "evaluation", "points/s", "vs naive"], rows, cell=str), ""]
    out += ["Max |difference|:", ""] + [f"- {k}: {v:.2e}" for k, v in r.max_abs_diff.items()] + [""]
    rows = []
    for m in r.meshes:
        naive = m["naive_dense_seconds_extrapolated"]
        rows.append([
            m["resolution"], m["extraction"], f"{m['points_evaluated']:,}", f"{100 * m['fraction_evaluated']:.1f}%",
            f"{m['seconds']:.1f}", f"{naive:,.0f}", f"{naive / m['seconds']:.0f}x",
            f"{m['vertex_distance_to_reference']:.1e}" if "vertex_distance_to_reference" in m else "-",
            f"{'yes' if m['identical_to_reference'] else 'NO'} ({m['reference']})" if "reference" in m else "-",
            f"{m['lipschitz']:.2f}" if np.isfinite(m["lipschitz"]) else "-", f"{m['peak_memory_mb']:,.0f}",
        ])
    out += [
        "Mesh extraction in the fitting box (sparse ensemble queries; the naive dense time is extrapolated "
        "from the measured naive throughput on uniform points):", "",
        markdown_table(["res", "extraction", "points evaluated", "of grid", "seconds", "naive dense s (extrap.)",
                        "speed-up vs naive dense", "vertex distance to reference", "identical mesh (to)",
                        "Lipschitz bound (measured: largest cell slope)", "peak MB"], rows, cell=str), "",
        "sparse: fixed Lipschitz bound 2 x margin 1.5; sparse_auto: per-cell measured bound; traced_auto: "
        "per-cell bound down to 2-voxel cells, then the surface traced voxel by voxel (nphm.mesh). Identical: "
        f"the same faces, vertices within {MESH_ROUNDING:g} (float32 rounding).", "",
    ]
    out += ["Peak memory so far after each query measurement (MB; process RSS on CPU, allocations on CUDA):", ""]
    out += [f"- {k}: {v:,.0f}" for k, v in r.peak_memory_mb.items()]
    return "\n".join(out)
