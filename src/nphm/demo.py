"""End-to-end demo: held-out synthetic heads fitted with the shipped pretrained NPHM (or NPM).

Steps (each skips finished work, so an interrupted demo resumes):

1. data: the first test identities of the set the shipped models were trained on are
   regenerated (same generator, seed and subject ids: identical scans) into ``out/data``;
2. observations: their single-view point clouds (release protocol);
3. fitting: NPHM identity + expression latents per subject from the point clouds (the CPU
   fitting config, optionally fewer steps), canonical mesh by marching cubes, posed meshes;
4. evaluation: render-based full-head and face-region metrics against the scans;
5. report: ``out/report.md`` with the metric tables, renders and the settings used.

Output::

    out/data/                   generated scans (+ single_view/ observations)
    out/fits/{s}_{e}.ply        fitted meshes (nphm frame), {s}_canonical.ply, latents,
                                {s}.png (observations over the fits), evaluation/
    out/renders/{s}.png         ground-truth scans above the fits, front and side
    out/report.md, settings.json
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from tqdm import tqdm

from nphm.evaluation.pipeline import EvalSettings

PathLike = Union[str, os.PathLike]

#: Description of the training set stored beside the shipped models.
TRAINING_DESCRIPTION = "training_dataset.json"


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`.

    Attributes:
        out_dir: output folder; models_dir: the shipped experiments (``nphm.paths.PRETRAINED``).
        fitting_config: fitting config naming the experiments in ``models_dir``.
        n_subjects: test identities fitted (the first ones of the training set's test split);
        n_expressions: expressions per identity (0 neutral closed, 1 neutral open, 2 jaw open,
            3 smile, ...).
        step_scale: overrides the config's ``fitting.step_scale`` (None: keep it).
        resolution: marching-cubes grid over the fitting box.
        evaluation: evaluation settings.
    """

    out_dir: Path
    models_dir: Path
    fitting_config: Path
    n_subjects: int = 2
    n_expressions: int = 4
    step_scale: Optional[float] = 0.2
    resolution: int = 192
    evaluation: EvalSettings = field(default_factory=lambda: EvalSettings(n_samples=100_000, resolution_scale=0.5))
    observation_seed: int = 0
    fitting_seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out_dir, self.models_dir, self.fitting_config = (Path(p) for p in
                                                              (self.out_dir, self.models_dir, self.fitting_config))
        if self.n_subjects < 1 or self.n_expressions < 1:
            raise ValueError(f"need n_subjects >= 1 and n_expressions >= 1, got {self.n_subjects}, "
                             f"{self.n_expressions}")

    def result_settings(self) -> Dict[str, object]:
        return {"models_dir": str(self.models_dir), "fitting_config": str(self.fitting_config),
                "n_subjects": self.n_subjects, "n_expressions": self.n_expressions, "step_scale": self.step_scale,
                "resolution": self.resolution, "evaluation": dataclasses.asdict(self.evaluation),
                "observation_seed": self.observation_seed, "fitting_seed": self.fitting_seed}


def _log(line: str) -> None:
    tqdm.write(line)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def training_set(models_dir: Path) -> Dict[str, object]:
    """The shipped description of the training set: seed, test subjects, expressions and the
    fingerprints of the held-out subjects."""
    path = models_dir / TRAINING_DESCRIPTION
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the pretrained folder must hold the training set's description "
                                "(scripts/training/export_compact.py --dataset)")
    data = json.loads(path.read_text())
    synthetic = data.get("synthetic")
    if not isinstance(synthetic, dict) or "seed" not in synthetic:
        raise ValueError(f"{path}: not the description of a synthetic set (no 'synthetic.seed')")
    if not data.get("subjects_test"):
        raise ValueError(f"{path}: no test subjects")
    return {"seed": int(synthetic["seed"]), "subjects_test": [int(s) for s in data["subjects_test"]],
            "n_expressions": int(synthetic.get("n_expressions", 2)),
            "n_subjects": int(synthetic.get("n_subjects", 0)), "expression_types": synthetic.get("expression_types"),
            "generator_version": synthetic.get("generator_version"),
            "fingerprints": data.get("held_out_fingerprints") or {}}


def prepare_data(cfg: DemoConfig, subjects: List[int], n_expressions: int, seed: int):
    """Generate the demo subjects (skipping finished scans) and return their DataManager."""
    from nphm.data import DataManager
    from nphm.data.synthetic.writer import ASSET_FILES, build_description, generate_dataset
    from nphm.utils.io import save_json

    data_dir = cfg.out_dir / "data"
    for subject in tqdm(subjects, desc="synthetic test heads", unit="subject"):
        report = generate_dataset(data_dir, n_subjects=1, n_expressions=n_expressions, seed=seed,
                                  first_subject=subject, progress=False)
        for s, e, message in report.failures:
            raise RuntimeError(f"generating subject {s} expression {e} failed: {message.splitlines()[0]}")
    # one description for all demo subjects, every one of them a test subject
    description = build_description(subjects, n_expressions, seed, dict(ASSET_FILES))
    description.update(subjects_train=[], subjects_eval=[], subjects_test=list(subjects))
    save_json(data_dir / "dataset.json", description)
    return DataManager(data_dir, None, data_dir / "single_view")


def _observations(cfg: DemoConfig, manager, subjects: List[int]) -> None:
    from nphm.data.observations import generate_observations, plan

    n_items = len(plan(manager, subjects)[0])
    for r in tqdm(generate_observations(manager, subjects, seed=cfg.observation_seed), total=n_items,
                  desc="single-view observations", unit="scan"):
        if r.status == "failed":
            raise RuntimeError(f"observation of subject {r.subject} expression {r.expression} failed: {r.message}")


def _fit(cfg: DemoConfig, manager, subjects: List[int], fits: Path) -> Dict[str, object]:
    import torch

    from nphm.fitting import io as fio
    from nphm.fitting.pipeline import fit_subjects
    from nphm.utils.device import resolve_device

    fit_cfg = fio.load_fitting_config(cfg.fitting_config)
    run_cfg = fit_cfg if cfg.step_scale is None else fit_cfg.with_step_scale(cfg.step_scale)
    settings = run_cfg.settings
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.fitting_seed)
    models = fio.load_models(fit_cfg, device, cfg.models_dir)
    fio.save_config_copy(fits, fit_cfg)
    _log(f"models: {_shown(cfg.models_dir)}: {fit_cfg.exp_name_shape} (epoch {models.epochs['shape']}), "
         f"{fit_cfg.exp_name_expr} (epoch {models.epochs.get('expr')}); device {device}; "
         f"{settings.n_iterations} fitting steps")
    failed = []
    for o in fit_subjects(manager, models, subjects, settings, fits, cfg.resolution, cfg.fitting_seed,
                          overwrite=cfg.overwrite):
        if o.status == "failed":
            failed.append(f"subject {o.subject}: {o.message}")
            _log(f"FAILED subject {o.subject}: {o.message}")
        elif o.status == "done":
            _log(f"subject {o.subject}: fitted {len(o.expressions)} expressions in {o.seconds_total:.0f} s")
    return {"method": fit_cfg.method,
            "models": {"identity": f"{fit_cfg.exp_name_shape} (epoch {models.epochs['shape']})",
                       "expression": f"{fit_cfg.exp_name_expr} (epoch {models.epochs.get('expr')})"},
            "steps": settings.n_iterations, "release_steps": settings.steps,
            "points_per_step": f"{settings.observations_per_step} x {settings.points_per_observation}",
            "device": str(device), "failed": failed}


def _renders(manager, subjects: List[int], fits: Path, out: Path, method: str) -> List[Path]:
    from nphm.data.manager import load_mesh
    from nphm.evaluation.pipeline import find_prediction
    from nphm.training.preview import render_meshes

    paths = []
    for subject in tqdm(subjects, desc="renders", unit="subject"):
        expressions = manager.test_expressions(subject)
        gt = [(f"scan {subject}_{e}", manager.load_scan(subject, e)) for e in expressions]
        fitted = []
        for e in expressions:
            pred = find_prediction(fits, subject, e)
            fitted.append((f"{method} fit {subject}_{e}", load_mesh(pred) if pred is not None else None))
        path = out / f"{subject}.png"
        render_meshes(path, gt + fitted, title=f"subject {subject}: scans (top), fits (bottom)",
                      max_columns=len(expressions))
        paths.append(path)
    return paths


def _check_settings(cfg: DemoConfig) -> None:
    from nphm.utils.io import claim_output_dir

    claim_output_dir(cfg.out_dir, cfg.result_settings(), cfg.overwrite, "use another --out or --overwrite")


def write_report(cfg: DemoConfig, info: Dict[str, object], gathered, renders: List[Path],
                 seconds: Dict[str, float]) -> Path:
    """``out/report.md``: what was run, the metric tables, pictures and timings."""
    from nphm.benchmarks.quality import MethodResult, metric_table
    from nphm.evaluation.gather import per_subject_markdown
    from nphm.evaluation.report import markdown_table
    from nphm.utils.io import atomic_path

    ev = cfg.evaluation
    fit = info["fit"]
    method = fit.get("method", "NPHM")
    result = MethodResult(method.lower(), method, totals=gathered.totals if gathered else {})
    names = info.get("expression_names") or []
    expr_text = ", ".join(f"{e} ({names[e]})" if e < len(names) else str(e) for e in range(info["n_expressions"]))
    lines = [
        f"# {method} demo: fitting held-out synthetic heads from single-view point clouds", "",
        f"- Test identities {info['subjects']} of the synthetic set the shipped models were trained on "
        f"(seed {info['seed']}, {info['n_train_subjects']} subjects; these are in its test split, never used for "
        f"training), expressions {expr_text}.",
        f"- Input per scan: one frontal depth view (2500 points), plus a view from behind for the first "
        "expression (the release's protocol).",
        f"- Models: `{_shown(cfg.models_dir)}`: {fit['models']['identity']} + {fit['models']['expression']}.",
        f"- Fitting: joint identity + expression latents, {fit['steps']} Adam steps with the release's schedules "
        f"compressed accordingly (release: {fit['release_steps']} steps), {fit['points_per_step']} points per "
        f"step; marching cubes at {cfg.resolution}^3 over the fitting box; device {fit['device']}.",
        f"- Evaluation: the release's render-based protocol with {ev.n_views} views at image scale "
        f"{ev.resolution_scale} and {ev.n_samples} samples (release: 1.0 and 250000); distances in mm.", "",
        "## Metrics (mean over all scans)", "",
        "Full head:", "", metric_table([result], "head"), "",
        "Face region:", "", metric_table([result], "face"), "",
    ]
    if gathered is not None and gathered.per_subject:
        lines += ["Per subject:", "", per_subject_markdown(gathered), ""]
    lines += ["## Pictures", ""]
    for p in renders:
        lines.append(f"![ground truth and fit of subject {p.stem}](renders/{p.name})")
    for subject in info["subjects"]:
        if (cfg.out_dir / "fits" / f"{subject}.png").is_file():
            lines.append(f"![observed points over the fits of subject {subject}](fits/{subject}.png)")
    lines += ["", "Per-scan pictures (input, prediction, ground truth, error map): "
              "`fits/evaluation/{subject}/expression_{e}/report.png`; meshes: `fits/{subject}_{e}.ply`.", ""]
    if info["warnings"]:
        lines += ["## Warnings", "", "The regenerated heads differ from the test heads of the training run (the "
                  "synthetic generator changed since the models were trained). They are still identities the "
                  "models never saw, but not the exact held-out scans:", ""]
        lines += [f"- {w}" for w in info["warnings"]] + [""]
    if fit["failed"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in fit["failed"]] + [""]
    lines += ["## Wall time", "", "This invocation (work finished by an earlier run of the same settings is reused, "
              "not repeated):", "",
              markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in seconds.items()]), ""]
    fit_times = []
    for subject in info["subjects"]:
        summary = cfg.out_dir / "fits" / f"{subject}_fitting.json"
        if summary.is_file():
            data = json.loads(summary.read_text())
            fit_times.append(f"subject {subject}: {data.get('seconds_fit', 0):.0f} s fitting, "
                             f"{data.get('seconds_total', 0):.0f} s with meshing and picture")
    if fit_times:
        lines += ["Per subject (when it was fitted): " + "; ".join(fit_times) + ".", ""]
    path = cfg.out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo (module docstring); returns the report path."""
    from nphm.evaluation.gather import gather
    from nphm.evaluation.pipeline import evaluate_results_dir

    start = time.perf_counter()
    seconds: Dict[str, float] = {}
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(cfg)
    train = training_set(cfg.models_dir)
    subjects = train["subjects_test"][:cfg.n_subjects]
    n_expressions = min(cfg.n_expressions, train["n_expressions"])
    _log(f"demo: test subjects {subjects} x {n_expressions} expressions (synthetic seed {train['seed']}) "
         f"-> {cfg.out_dir}")

    t = time.perf_counter()
    manager = prepare_data(cfg, subjects, n_expressions, train["seed"])
    seconds["synthetic heads"] = time.perf_counter() - t
    from nphm.pretrained import fingerprint_mismatches

    mismatches = fingerprint_mismatches(manager, train["fingerprints"], subjects)
    if not train["fingerprints"]:
        mismatches = ["the training set description has no fingerprints: regenerated heads were not checked"]
    for line in mismatches:
        _log(f"WARNING: {line}: not the exact test head of the training run (the synthetic generator changed "
             "since the models were trained); still an identity the models never saw")
    t = time.perf_counter()
    _observations(cfg, manager, subjects)
    seconds["observations"] = time.perf_counter() - t

    fits = cfg.out_dir / "fits"
    t = time.perf_counter()
    fit_info = _fit(cfg, manager, subjects, fits)
    seconds["fitting + meshing"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = evaluate_results_dir(fits, manager, cfg.evaluation, subjects=subjects, cache_dir=cfg.out_dir / "gt_cache",
                                   overwrite=cfg.overwrite)
    for f in summary.failed:
        fit_info["failed"].append(f"evaluation of {f['subject']}/{f['expression']}: {f['error']}")
    try:
        gathered = gather(fits, subjects)
    except FileNotFoundError:
        gathered = None
    seconds["evaluation"] = time.perf_counter() - t

    t = time.perf_counter()
    renders = _renders(manager, subjects, fits, cfg.out_dir / "renders", fit_info["method"])
    seconds["renders"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    info = {"subjects": subjects, "seed": train["seed"], "n_train_subjects": train["n_subjects"],
            "n_expressions": n_expressions, "expression_names": train["expression_types"], "fit": fit_info,
            "warnings": mismatches}
    return write_report(cfg, info, gathered, renders, {k: round(v, 1) for k, v in seconds.items()})


__all__ = ["DemoConfig", "TRAINING_DESCRIPTION", "prepare_data", "run_demo", "training_set", "write_report"]
