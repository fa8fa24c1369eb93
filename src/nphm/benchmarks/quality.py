"""Quality benchmark: NPHM, NPM and a linear (PCA) baseline fitted to the same single-view
point clouds of held-out synthetic identities, evaluated with the release's protocol.

Steps (each skips finished work, so an interrupted run resumes):

1. dataset: generate the synthetic set if ``data_dir`` has none (the identities of its test
   split are never used for training);
2. models: for NPHM and NPM the identity and expression experiments named by the fitting
   configs (``configs/fitting_{nphm,npm}_cpu.yaml``) are reused when they have a checkpoint,
   otherwise trained with the CPU configs (supervision is sampled first); policy ``train``:
   ``missing`` (default), ``resume`` (also finish incomplete experiments) or ``never`` (a
   method without models is left out and the report says so);
3. observations: the single-view point clouds of the test scans;
4. fitting: the release protocol (joint identity + expression fit, the CPU configs' schedule)
   for the neural models, closest-point least squares for the linear model
   (:mod:`nphm.baselines.pca`, built from the training subjects' registrations);
5. evaluation: render-based samples of every fit and scan, full head and face region, with
   one ground-truth sample cache shared by all methods;
6. report: ``quality.md`` (tables like the release README's), ``quality.json`` and pictures.

Output folder::

    out_dir/settings.json   knobs that change results (a later run must match or overwrite)
    out_dir/fits/{method}/{subject}_{expression}.ply and evaluation/ (per-scan metrics)
    out_dir/gt_cache/       ground-truth samples
    out_dir/pca_model.npz   the linear model
    out_dir/pictures/       ground truth next to every method's fit, per scan
    out_dir/quality.md, quality.json
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from nphm.baselines.pca import PCAFitSettings
from nphm.evaluation.pipeline import EvalSettings
from nphm.evaluation.report import markdown_table

PathLike = Union[str, os.PathLike]
Log = Callable[[str], None]

TRAIN_POLICIES = ("missing", "resume", "never")


@dataclass(frozen=True)
class NeuralMethod:
    """A neural model of the benchmark: its configs (file names in the config folder)."""

    key: str
    label: str
    fitting_config: str
    identity_config: str
    expression_config: str
    expression_mode: str
    local: bool


NEURAL_METHODS: Dict[str, NeuralMethod] = {
    "nphm": NeuralMethod("nphm", "NPHM", "fitting_nphm_cpu.yaml", "nphm_cpu.yaml", "nphm_def_cpu.yaml", "compress",
                         True),
    "npm": NeuralMethod("npm", "NPM", "fitting_npm_cpu.yaml", "npm_cpu.yaml", "npm_def_cpu.yaml", "npm", False),
}
METHOD_LABELS = {"nphm": "NPHM", "npm": "NPM", "pca": "Linear (PCA)"}
ALL_METHODS = ("npm", "nphm", "pca")
#: Columns of the release README's tables: (metric key, header).
README_COLUMNS = (
    ("chamfer_l1", "Chamfer-L1 (mm)"),
    ("chamfer_l2", "Chamfer-L2 (mm²)"),
    ("normals consistency", "Normal consistency"),
    ("f_score_05", "F-score@1mm"),
    ("f_score_10", "F-score@5mm"),
)


@dataclass
class QualityConfig:
    """Everything a benchmark run needs (paths and knobs).

    Attributes:
        out_dir: output folder (see the module docstring).
        data_dir, single_view_dir, experiment_dir, supervision_identity,
        supervision_deformation: the usual ``nphm.paths`` folders.
        config_dir: folder with the training and fitting configs (``configs/``).
        methods: subset of :data:`ALL_METHODS`.
        n_subjects, n_expressions, dataset_seed: synthetic set generated when missing.
        subjects: test subjects (default: the test split); max_subjects: only the first N.
        max_expressions: only the first N test expressions of every subject.
        step_scale: overrides ``fitting.step_scale`` of the fitting configs (fewer steps).
        resolution: marching-cubes grid of the neural fits.
        evaluation: evaluation settings (defaults: the release's protocol).
        pca, pca_components: linear fitting settings and (n_id, n_ex) maximum components.
        train: one of :data:`TRAIN_POLICIES`.
        pictures: number of scans drawn with every method's fit.
    """

    out_dir: Path
    data_dir: Path
    single_view_dir: Path
    experiment_dir: Path
    supervision_identity: Path
    supervision_deformation: Path
    config_dir: Path
    methods: Tuple[str, ...] = ALL_METHODS
    n_subjects: int = 30
    n_expressions: int = 8
    dataset_seed: int = 1
    observation_seed: int = 0
    fitting_seed: int = 0
    subjects: Optional[List[int]] = None
    max_subjects: Optional[int] = None
    max_expressions: Optional[int] = None
    step_scale: Optional[float] = None
    resolution: int = 256
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    pca: PCAFitSettings = field(default_factory=PCAFitSettings)
    pca_components: Tuple[Optional[int], Optional[int]] = (None, 50)
    train: str = "missing"
    device: str = "auto"
    workers: int = 1
    pictures: int = 4
    overwrite: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(ALL_METHODS)
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
        if self.train not in TRAIN_POLICIES:
            raise ValueError(f"train must be one of {TRAIN_POLICIES}, got {self.train!r}")
        for name in ("out_dir", "data_dir", "single_view_dir", "experiment_dir", "supervision_identity",
                     "supervision_deformation", "config_dir"):
            setattr(self, name, Path(getattr(self, name)))

    def result_settings(self) -> Dict[str, object]:
        """The knobs that change the numbers (stored in ``settings.json``)."""
        return {
            "dataset": {"n_subjects": self.n_subjects, "n_expressions": self.n_expressions,
                        "seed": self.dataset_seed, "data_dir": str(self.data_dir)},
            "observation_seed": self.observation_seed,
            "fitting_seed": self.fitting_seed,
            "subjects": self.subjects,
            "max_subjects": self.max_subjects,
            "max_expressions": self.max_expressions,
            "step_scale": self.step_scale,
            "resolution": self.resolution,
            "evaluation": dataclasses.asdict(self.evaluation),
            "pca": dataclasses.asdict(self.pca),
            "pca_components": list(self.pca_components),
        }


@dataclass
class MethodResult:
    """Outcome of one method: totals ``{"head": {...}, "face": {...}}`` or a note why not."""

    key: str
    label: str
    totals: Dict[str, Dict[str, float]] = field(default_factory=dict)
    note: str = ""
    models: str = ""
    seconds: Dict[str, float] = field(default_factory=dict)
    fit_seconds: List[float] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    results_dir: Optional[Path] = None


# ------------------------------------------------------------------------------------ data
def prepare_dataset(cfg: QualityConfig, log: Log = print):
    """The :class:`~nphm.data.DataManager` of the dataset, generated first when missing."""
    from nphm.data import DataManager

    if not (cfg.data_dir / "dataset.json").is_file():
        from nphm.data.synthetic import generate_dataset

        log(f"generating the synthetic set: {cfg.n_subjects} subjects x {cfg.n_expressions} expressions, "
            f"seed {cfg.dataset_seed} -> {cfg.data_dir}")
        report = generate_dataset(cfg.data_dir, n_subjects=cfg.n_subjects, n_expressions=cfg.n_expressions,
                                  seed=cfg.dataset_seed, workers=cfg.workers)
        for subject, expression, message in report.failures:
            log(f"FAILED scan {subject}/{expression}: {message.splitlines()[0]}")
    return DataManager(cfg.data_dir, None, cfg.single_view_dir)


def restrict_manager(manager, subjects: Sequence[int], max_expressions: Optional[int] = None):
    """A DataManager whose test split is ``subjects`` with at most ``max_expressions`` test
    expressions each (the rest are marked invalid for testing); the data are unchanged."""
    from nphm.data import DataManager

    desc = manager.description
    invalid = {int(s): list(v) for s, v in desc.invalid_expressions_test.items()}
    if max_expressions is not None:
        for s in subjects:
            valid = manager.test_expressions(s)
            invalid[int(s)] = sorted(set(invalid.get(int(s), [])) | set(valid[max_expressions:]))
    restricted = dataclasses.replace(desc, subjects_test=[int(s) for s in subjects],
                                     invalid_expressions_test=invalid)
    return DataManager(manager.data_dir, restricted, manager.single_view_dir)


def benchmark_subjects(cfg: QualityConfig, manager) -> List[int]:
    subjects = list(cfg.subjects) if cfg.subjects else manager.subjects("test")
    if cfg.max_subjects is not None:
        subjects = subjects[:cfg.max_subjects]
    if not subjects:
        raise ValueError(f"no test subjects in {cfg.data_dir}")
    return subjects


def ensure_observations(cfg: QualityConfig, manager, subjects: Sequence[int], log: Log = print) -> None:
    """Render the single-view observations that are missing (failures are logged)."""
    from nphm.data.observations import generate_observations, plan

    n_items = len(plan(manager, subjects)[0])
    results = generate_observations(manager, subjects, seed=cfg.observation_seed, workers=cfg.workers)
    for r in tqdm(results, total=n_items, desc="single-view observations", unit="scan"):
        if r.status == "failed":
            log(f"FAILED observation {r.subject}/{r.expression}: {r.message}")


# ---------------------------------------------------------------------------------- training
def _ensure_supervision(cfg: QualityConfig, manager, kind: str, log: Log) -> None:
    from nphm.preprocessing import PRESETS
    from nphm.preprocessing.jobs import sample_deformation_dataset, sample_identity_dataset

    subjects = sorted(set(manager.subjects("train")) | set(manager.subjects("eval")))
    if kind == "identity":
        runs = sample_identity_dataset(manager, cfg.supervision_identity, subjects,
                                       PRESETS["synthetic"]["identity"], workers=cfg.workers)
    else:
        runs = sample_deformation_dataset(manager, cfg.supervision_deformation, subjects,
                                          PRESETS["synthetic"]["deformation"], workers=cfg.workers)
    for results in tqdm(runs, total=len(subjects), desc=f"{kind} supervision", unit="subject"):
        for r in results:
            if r.status == "failed":
                log(f"FAILED {kind} supervision {r.subject}/{r.expression}: {r.message}")


def ensure_models(cfg: QualityConfig, method: NeuralMethod, manager, log: Log = print) -> Tuple[bool, str]:
    """Make sure the experiments of ``method`` exist (training them per ``cfg.train``).

    Returns:
        ``(available, note)``; ``note`` explains a missing model or what was trained.
    """
    from nphm.checkpoints import available_epochs
    from nphm.config import load_yaml
    from nphm.fitting.io import load_fitting_config
    from nphm.training import stage1, stage2

    fit_cfg = load_fitting_config(cfg.config_dir / method.fitting_config)
    stages = [("identity", fit_cfg.exp_name_shape, method.identity_config)]
    if fit_cfg.exp_name_expr:
        stages.append(("deformation", fit_cfg.exp_name_expr, method.expression_config))
    notes = []
    for kind, name, train_config in stages:
        exp_dir = cfg.experiment_dir / name
        if available_epochs(exp_dir) and cfg.train != "resume":
            continue
        if cfg.train == "never":
            return False, f"no trained {kind} model ({exp_dir} has no checkpoint; training disabled)"
        log(f"{method.label}: training {kind} experiment {exp_dir} with {train_config}")
        _ensure_supervision(cfg, manager, kind, log)
        train_cfg = load_yaml(cfg.config_dir / train_config)
        if kind == "identity":
            stage1.train(train_cfg, exp_dir, data_dir=cfg.data_dir, supervision_dir=cfg.supervision_identity,
                         device=cfg.device, wandb_mode="disabled", local=method.local)
        else:
            train_cfg.setdefault("training", {})["shape_exp_name"] = stages[0][1]
            stage2.train(train_cfg, exp_dir, method.expression_mode, data_dir=cfg.data_dir,
                         supervision_dir=cfg.supervision_deformation,
                         identity_exp_dir=cfg.experiment_dir / stages[0][1], device=cfg.device,
                         wandb_mode="disabled")
        notes.append(f"trained {name}")
    return True, "; ".join(notes)


# ----------------------------------------------------------------------------------- fitting
def _fit_neural(cfg: QualityConfig, method: NeuralMethod, manager, subjects, out: Path, result: MethodResult,
                log: Log) -> None:
    import torch

    from nphm.fitting import io as fio
    from nphm.fitting.pipeline import fit_subjects
    from nphm.utils.device import resolve_device

    fit_cfg = fio.load_fitting_config(cfg.config_dir / method.fitting_config)
    run_cfg = fit_cfg if cfg.step_scale is None else fit_cfg.with_step_scale(cfg.step_scale)
    settings = run_cfg.settings
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.fitting_seed)
    models = fio.load_models(fit_cfg, device, cfg.experiment_dir)
    result.models = f"{fit_cfg.exp_name_shape} (epoch {models.epochs['shape']})" + (
        f" + {fit_cfg.exp_name_expr} (epoch {models.epochs['expr']})" if "expr" in models.epochs else "")
    result.models += f"; {settings.n_iterations} fitting steps, marching cubes {cfg.resolution}^3"
    fio.save_config_copy(out, fit_cfg)
    for o in fit_subjects(manager, models, subjects, settings, out, cfg.resolution, cfg.fitting_seed,
                          overwrite=cfg.overwrite, figure=cfg.pictures > 0):
        _record(o, result, log)


def _fit_pca(cfg: QualityConfig, manager_full, manager, subjects, out: Path, result: MethodResult, log: Log) -> None:
    from nphm.baselines.pca import LinearHeadModel, linear_model_from_dataset
    from nphm.baselines.runner import fit_pca_subjects

    path = cfg.out_dir / "pca_model.npz"
    if path.is_file() and not cfg.overwrite:
        model = LinearHeadModel.load(path)
    else:
        train = manager_full.subjects("train")
        model = linear_model_from_dataset(manager_full, train, *cfg.pca_components, progress=True)
        model.save(path)
    result.models = (f"{model.n_id} identity + {model.n_ex} expression components from "
                     f"{model.info.get('n_neutrals')} training subjects / {model.info.get('n_offsets')} expression "
                     f"scans; {cfg.pca.iterations} closest-point iterations")
    for o in fit_pca_subjects(manager, model, subjects, cfg.pca, out, overwrite=cfg.overwrite,
                              figure=cfg.pictures > 0):
        _record(o, result, log)


def _record(outcome, result: MethodResult, log: Log) -> None:
    if outcome.status == "failed":
        result.failures.append(f"subject {outcome.subject}: {outcome.message}")
        log(f"FAILED {result.label} subject {outcome.subject}: {outcome.message}")
    elif outcome.status == "done":
        result.fit_seconds.append(outcome.seconds_total)
        log(f"{result.label} subject {outcome.subject}: {len(outcome.expressions)} expressions in "
            f"{outcome.seconds_total:.0f} s")


# -------------------------------------------------------------------------------- evaluation
def evaluate_method(cfg: QualityConfig, manager, subjects, result: MethodResult, log: Log) -> None:
    """Evaluate ``result.results_dir`` and put the totals into ``result``."""
    from nphm.evaluation.gather import gather
    from nphm.evaluation.pipeline import evaluate_results_dir

    summary = evaluate_results_dir(result.results_dir, manager, cfg.evaluation, subjects=subjects,
                                   cache_dir=cfg.out_dir / "gt_cache", overwrite=cfg.overwrite, figures=False,
                                   log=lambda line: None)
    for f in summary.failed:
        result.failures.append(f"scan {f['subject']}/{f['expression']}: {f['error']}")
    try:
        gathered = gather(result.results_dir, subjects)
    except FileNotFoundError as e:
        result.note = f"nothing evaluated ({e})"
        return
    result.totals = gathered.totals


# ---------------------------------------------------------------------------------- reporting
def metric_table(results: Sequence[MethodResult], region: str) -> str:
    """Release-README style table of one region ("head" or "face"), one row per method."""
    header = ["", "scans"] + [name for _, name in README_COLUMNS]
    rows = []
    for r in results:
        t = r.totals.get(region)
        if t is None:
            rows.append([r.label, "-"] + ["-"] * len(README_COLUMNS))
        else:
            rows.append([r.label, str(int(t["n_scans"]))] + [t.get(k) for k, _ in README_COLUMNS])
    return markdown_table(header, rows)


def comparison_pictures(cfg: QualityConfig, manager, results: Sequence[MethodResult],
                        items: Sequence[Tuple[int, int]]) -> List[Path]:
    """One picture per scan: the ground-truth scan next to every method's fit (front and side)."""
    from nphm.data.manager import load_mesh
    from nphm.evaluation.pipeline import find_prediction
    from nphm.training.preview import render_meshes

    paths = []
    for subject, expression in tqdm(items, desc="pictures", unit="scan"):
        tiles = [("ground truth", manager.load_scan(subject, expression))]
        for r in results:
            pred = find_prediction(r.results_dir, subject, expression) if r.results_dir else None
            if pred is None:
                continue
            t = None
            metrics = r.results_dir / "evaluation" / str(subject) / f"expression_{expression}" / "metrics.json"
            if metrics.is_file():
                t = json.loads(metrics.read_text()).get("chamfer_l1")
            tiles.append((r.label + (f" ({t:.2f} mm)" if t is not None else ""), load_mesh(pred)))
        path = cfg.out_dir / "pictures" / f"{subject}_{expression}.png"
        render_meshes(path, tiles, title=f"subject {subject}, expression {expression}")
        paths.append(path)
    return paths


def _picture_items(manager, subjects: Sequence[int], n: int) -> List[Tuple[int, int]]:
    items = [(s, e) for s in subjects for e in manager.test_expressions(s)]
    if n <= 0 or not items:
        return []
    step = max(1, len(items) // n)
    return items[::step][:n]


def write_report(cfg: QualityConfig, results: Sequence[MethodResult], subjects: Sequence[int], n_scans: int,
                 pictures: Sequence[Path], seconds_total: float) -> Path:
    """``quality.md`` and ``quality.json`` in ``cfg.out_dir``."""
    from nphm.utils.io import atomic_path, save_json

    ev = cfg.evaluation
    lines = [
        "# Quality benchmark on held-out synthetic identities", "",
        f"Dataset `{cfg.data_dir}` (synthetic, seed {cfg.dataset_seed}); test identities {list(subjects)} "
        f"(never used for training), {n_scans} scans with single-view observations (a frontal view per "
        "expression, plus a view from behind for the first). Every method fits the same point clouds; "
        f"evaluation: render-based sampling ({ev.n_views} views, image scale {ev.resolution_scale}, "
        f"{ev.n_samples} samples), distances in mm.", "",
        "## Full head", "", metric_table(results, "head"), "",
        "## Face region", "", metric_table(results, "face"), "",
        "## Models", "",
        markdown_table(["method", "models / fitting", "fit time per subject [s]", "note"],
                       [[r.label, r.models or "-", _mean_seconds(r), r.note or "-"] for r in results]), "",
    ]
    if pictures:
        lines += ["## Pictures", "", "Ground-truth scan and every method's fit (front and side; Chamfer-L1 of the "
                  "full head in brackets).", ""]
        lines += [f"![{p.stem}](pictures/{p.name})" for p in pictures] + [""]
    failures = [(r.label, f) for r in results for f in r.failures]
    if failures:
        lines += ["## Failures", "", markdown_table(["method", "what"], [[a, b] for a, b in failures]), ""]
    lines += [f"Total wall time {seconds_total / 60:.1f} min.", ""]
    path = cfg.out_dir / "quality.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    save_json(cfg.out_dir / "quality.json", {
        "settings": cfg.result_settings(),
        "subjects": list(subjects),
        "methods": {r.key: {"label": r.label, "totals": r.totals, "note": r.note, "models": r.models,
                            "failures": r.failures, "seconds_fit_per_subject": r.fit_seconds,
                            "seconds": r.seconds}
                    for r in results},
        "seconds_total": round(seconds_total, 1),
    })
    return path


def _mean_seconds(r: MethodResult) -> str:
    return f"{sum(r.fit_seconds) / len(r.fit_seconds):.0f}" if r.fit_seconds else "-"


def _check_settings(cfg: QualityConfig) -> None:
    from nphm.utils.io import claim_output_dir

    claim_output_dir(cfg.out_dir, cfg.result_settings(), cfg.overwrite, "use another output folder or overwrite")


# ---------------------------------------------------------------------------------------- run
def run_quality(cfg: QualityConfig, log: Log = tqdm.write) -> Tuple[Path, List[MethodResult]]:
    """Run the benchmark (see the module docstring); returns the report path and the results."""
    start = time.perf_counter()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(cfg)
    manager_full = prepare_dataset(cfg, log)
    subjects = benchmark_subjects(cfg, manager_full)
    train_subjects = set(manager_full.subjects("train")) | set(manager_full.subjects("eval"))
    if train_subjects & set(subjects):
        raise ValueError(f"test subjects {sorted(train_subjects & set(subjects))} are training/eval subjects")
    manager = restrict_manager(manager_full, subjects, cfg.max_expressions)
    n_scans = sum(len(manager.test_expressions(s)) for s in subjects)
    log(f"test subjects {subjects}: {n_scans} scans")
    ensure_observations(cfg, manager, subjects, log)

    results: List[MethodResult] = []
    for key in [m for m in ALL_METHODS if m in cfg.methods]:
        result = MethodResult(key, METHOD_LABELS[key], results_dir=cfg.out_dir / "fits" / key)
        results.append(result)
        t0 = time.perf_counter()
        try:
            if key in NEURAL_METHODS:
                available, note = ensure_models(cfg, NEURAL_METHODS[key], manager_full, log)
                result.note = note
                if not available:
                    log(f"{result.label} left out: {note}")
                    result.results_dir = None
                    continue
                _fit_neural(cfg, NEURAL_METHODS[key], manager, subjects, result.results_dir, result, log)
            else:
                _fit_pca(cfg, manager_full, manager, subjects, result.results_dir, result, log)
            result.seconds["fitting"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            evaluate_method(cfg, manager, subjects, result, log)
            result.seconds["evaluation"] = time.perf_counter() - t1
        except Exception as e:  # one broken method must not lose the others' results
            result.note = f"failed: {type(e).__name__}: {e}"
            log(f"{result.label}: {result.note}")
        if result.totals:
            h, f = result.totals["head"], result.totals.get("face", {})
            log(f"{result.label}: head CD-L1 {h['chamfer_l1']:.3f} mm, face CD-L1 "
                f"{f.get('chamfer_l1', float('nan')):.3f} mm over {int(h['n_scans'])} scans")
    pictures = comparison_pictures(cfg, manager, results, _picture_items(manager, subjects, cfg.pictures))
    path = write_report(cfg, results, subjects, n_scans, pictures, time.perf_counter() - start)
    return path, results


__all__ = [
    "ALL_METHODS",
    "MethodResult",
    "NEURAL_METHODS",
    "QualityConfig",
    "TRAIN_POLICIES",
    "comparison_pictures",
    "ensure_models",
    "evaluate_method",
    "metric_table",
    "prepare_dataset",
    "restrict_manager",
    "run_quality",
    "write_report",
]
