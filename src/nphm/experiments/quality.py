"""Quality benchmark: NPHM, NPM and a linear (PCA) baseline fitted to the same single-view
point clouds of held-out synthetic identities, evaluated with the release's protocol.

Steps (the stages of :mod:`nphm.experiments.stages`; each skips finished work, so an
interrupted run resumes):

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
    out_dir/fits/{method}/  fits in the layout of :mod:`nphm.layout` (+ evaluation/)
    out_dir/gt_cache/       ground-truth samples
    out_dir/pca_model.npz   the linear model
    out_dir/pictures/       ground truth next to every method's fit, per scan
    out_dir/quality.md, quality.json
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from nphm.baselines.pca import PCAFitSettings
from nphm.evaluation.pipeline import EvalSettings
from nphm.experiments import stages
from nphm.experiments.stages import Log, MethodRun
from nphm.utils.tables import format_metric, markdown_table

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
        supervision_deformation: the usual :mod:`nphm.paths` folders.
        config_dir: folder with the training and fitting configs (``configs/``).
        methods: subset of :data:`ALL_METHODS`.
        fitting_configs: explicit fitting config per neural method (default:
            ``config_dir / NEURAL_METHODS[key].fitting_config``).
        n_subjects, n_expressions, dataset_seed, dataset_source: synthetic set generated when
            missing ("procedural" heads, the ones the shipped models were trained on, or "ict").
        subjects: test subjects (default: the test split); max_subjects: only the first N.
        max_expressions: only the first N test expressions of every subject.
        step_scale: overrides ``fitting.step_scale`` of the fitting configs (fewer steps).
        resolution: marching-cubes grid of the neural fits.
        evaluation: evaluation settings (defaults: the release's protocol);
        evaluation_figures: a report picture per evaluated scan.
        pca, pca_components: linear fitting settings and (n_id, n_ex) maximum components.
        train: one of :data:`TRAIN_POLICIES`.
        pictures: number of scans drawn with every method's fit (0: none, and no per-subject
            fit pictures either).
    """

    out_dir: Path
    data_dir: Path
    single_view_dir: Path
    experiment_dir: Path
    supervision_identity: Path
    supervision_deformation: Path
    config_dir: Path
    methods: Tuple[str, ...] = ALL_METHODS
    fitting_configs: Dict[str, Path] = field(default_factory=dict)
    n_subjects: int = 30
    n_expressions: int = 8
    dataset_seed: int = 1
    dataset_source: str = "procedural"
    observation_seed: int = 0
    fitting_seed: int = 0
    subjects: Optional[List[int]] = None
    max_subjects: Optional[int] = None
    max_expressions: Optional[int] = None
    step_scale: Optional[float] = None
    resolution: int = 256
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    evaluation_figures: bool = False
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
        self.fitting_configs = {k: Path(v) for k, v in self.fitting_configs.items()}

    def fitting_config(self, key: str) -> Path:
        """The fitting config of neural method ``key``."""
        return self.fitting_configs.get(key, self.config_dir / NEURAL_METHODS[key].fitting_config)

    def result_settings(self) -> Dict[str, object]:
        """The knobs that change the numbers (stored in ``settings.json``)."""
        dataset = {"n_subjects": self.n_subjects, "n_expressions": self.n_expressions,
                   "seed": self.dataset_seed, "data_dir": str(self.data_dir)}
        if self.dataset_source != "procedural":  # folders of earlier runs (procedural only) stay valid
            dataset["source"] = self.dataset_source
        return {
            "dataset": dataset,
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


# ------------------------------------------------------------------------------------ data
def benchmark_subjects(cfg: QualityConfig, manager) -> List[int]:
    subjects = list(cfg.subjects) if cfg.subjects else manager.subjects("test")
    if cfg.max_subjects is not None:
        subjects = subjects[:cfg.max_subjects]
    if not subjects:
        raise ValueError(f"no test subjects in {cfg.data_dir}")
    return subjects


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

    fit_cfg = load_fitting_config(cfg.fitting_config(method.key))
    experiments = [("identity", fit_cfg.exp_name_shape, method.identity_config)]
    if fit_cfg.exp_name_expr:
        experiments.append(("deformation", fit_cfg.exp_name_expr, method.expression_config))
    notes = []
    for kind, name, train_config in experiments:
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
            train_cfg.setdefault("training", {})["shape_exp_name"] = experiments[0][1]
            stage2.train(train_cfg, exp_dir, method.expression_mode, data_dir=cfg.data_dir,
                         supervision_dir=cfg.supervision_deformation,
                         identity_exp_dir=cfg.experiment_dir / experiments[0][1], device=cfg.device,
                         wandb_mode="disabled")
        notes.append(f"trained {name}")
    return True, "; ".join(notes)


# ---------------------------------------------------------------------------- one method
def run_method(cfg: QualityConfig, key: str, results_dir: Path, manager_full, manager, subjects: Sequence[int],
               log: Log = tqdm.write, eval_log: Optional[Log] = None) -> MethodRun:
    """Fit method ``key`` to every subject's observations and evaluate it (never raises: a
    broken method's note says why). ``eval_log`` receives the evaluation's per-scan lines
    (None: silent)."""
    run = MethodRun(key, METHOD_LABELS[key], results_dir=results_dir)
    t0 = time.perf_counter()
    try:
        if key in NEURAL_METHODS:
            available, run.note = ensure_models(cfg, NEURAL_METHODS[key], manager_full, log)
            if not available:
                log(f"{run.label} left out: {run.note}")
                run.results_dir = None
                return run
            stages.fit_neural(run, cfg.fitting_config(key), cfg.experiment_dir, manager, subjects, cfg.resolution,
                              cfg.fitting_seed, cfg.device, cfg.step_scale, cfg.overwrite, cfg.pictures > 0, log)
        else:
            stages.fit_linear(run, cfg.out_dir / "pca_model.npz", manager_full, manager, subjects, cfg.pca,
                              cfg.pca_components, cfg.overwrite, cfg.pictures > 0, log)
        run.seconds["fitting"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        run.info["gathered"] = stages.evaluate(run, manager, subjects, cfg.evaluation, cfg.out_dir / "gt_cache",
                                               cfg.overwrite, cfg.evaluation_figures,
                                               eval_log if eval_log is not None else (lambda line: None))
        run.seconds["evaluation"] = time.perf_counter() - t1
    except Exception as e:  # one broken method must not lose the others' results
        run.note = f"failed: {type(e).__name__}: {e}"
        log(f"{run.label}: {run.note}")
    if run.totals:
        h, f = run.totals["head"], run.totals.get("face", {})
        log(f"{run.label}: head CD-L1 {h['chamfer_l1']:.3f} mm, face CD-L1 "
            f"{f.get('chamfer_l1', float('nan')):.3f} mm over {int(h['n_scans'])} scans")
    return run


# ---------------------------------------------------------------------------------- reporting
def metric_table(runs: Sequence[MethodRun], region: str) -> str:
    """Release-README style table of one region ("head" or "face"), one row per method."""
    header = ["", "scans"] + [name for _, name in README_COLUMNS]
    rows = []
    for r in runs:
        t = r.totals.get(region)
        if t is None:
            rows.append([r.label, "-"] + ["-"] * len(README_COLUMNS))
        else:
            rows.append([r.label, str(int(t["n_scans"]))] + [t.get(k) for k, _ in README_COLUMNS])
    return markdown_table(header, rows, cell=format_metric)


def _picture_items(manager, subjects: Sequence[int], n: int) -> List[Tuple[int, int]]:
    items = [(s, e) for s in subjects for e in manager.test_expressions(s)]
    if n <= 0 or not items:
        return []
    step = max(1, len(items) // n)
    return items[::step][:n]


def _mean_seconds(r: MethodRun) -> str:
    return f"{sum(r.fit_seconds) / len(r.fit_seconds):.0f}" if r.fit_seconds else "-"


def dataset_origin(cfg: QualityConfig) -> str:
    """How the benchmark's dataset was made, from its description: ``"synthetic, ict heads, seed 3"``
    (the config's seed and source when the description has no ``synthetic`` block)."""
    import json

    try:
        synthetic = json.loads((Path(cfg.data_dir) / "dataset.json").read_text()).get("synthetic") or {}
    except (OSError, ValueError):
        synthetic = {}
    source = synthetic.get("source", cfg.dataset_source if not synthetic else "procedural")
    return f"synthetic, {source} heads, seed {synthetic.get('seed', cfg.dataset_seed)}"


def write_report(cfg: QualityConfig, runs: Sequence[MethodRun], subjects: Sequence[int], n_scans: int,
                 pictures: Sequence[Path], failures: Sequence[str], seconds_total: float) -> Path:
    """``quality.md`` and ``quality.json`` in ``cfg.out_dir``."""
    from nphm.utils.io import atomic_path, save_json

    ev = cfg.evaluation
    lines = [
        "# Quality benchmark on held-out synthetic identities", "",
        f"Dataset `{cfg.data_dir}` ({dataset_origin(cfg)}); test identities {list(subjects)} "
        f"(never used for training), {n_scans} scans with single-view observations (a frontal view per "
        "expression, plus a view from behind for the first). Every method fits the same point clouds; "
        f"evaluation: render-based sampling ({ev.n_views} views, image scale {ev.resolution_scale}, "
        f"{ev.n_samples} samples), distances in mm.", "",
        "## Full head", "", metric_table(runs, "head"), "",
        "## Face region", "", metric_table(runs, "face"), "",
        "## Models", "",
        markdown_table(["method", "models / fitting", "fit time per subject [s]", "note"],
                       [[r.label, r.models or "-", _mean_seconds(r), r.note or "-"] for r in runs],
                       cell=format_metric), "",
    ]
    if pictures:
        lines += ["## Pictures", "", "Ground-truth scan and every method's fit (front and side; Chamfer-L1 of the "
                  "full head in brackets).", ""]
        lines += [f"![{p.stem}](pictures/{p.name})" for p in pictures] + [""]
    rows = [["data", f] for f in failures] + [[r.label, f] for r in runs for f in r.failures]
    if rows:
        lines += ["## Failures", "", markdown_table(["method", "what"], rows, cell=format_metric), ""]
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
                    for r in runs},
        "failures": list(failures),
        "seconds_total": round(seconds_total, 1),
    })
    return path


def claim_output(cfg: QualityConfig, settings: Dict[str, object], hint: str) -> None:
    """Create ``cfg.out_dir`` and check that it holds results of the same settings."""
    from nphm.utils.io import claim_output_dir

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    claim_output_dir(cfg.out_dir, settings, cfg.overwrite, hint)


# ---------------------------------------------------------------------------------------- run
def run_quality(cfg: QualityConfig, log: Log = tqdm.write) -> Tuple[Path, List[MethodRun]]:
    """Run the benchmark (see the module docstring); returns the report path and the results."""
    start = time.perf_counter()
    claim_output(cfg, cfg.result_settings(), "use another output folder or overwrite")
    manager_full, failures = stages.ensure_dataset(cfg.data_dir, cfg.single_view_dir, cfg.n_subjects,
                                                   cfg.n_expressions, cfg.dataset_seed, cfg.workers, log,
                                                   cfg.dataset_source)
    subjects = benchmark_subjects(cfg, manager_full)
    train_subjects = set(manager_full.subjects("train")) | set(manager_full.subjects("eval"))
    if train_subjects & set(subjects):
        raise ValueError(f"test subjects {sorted(train_subjects & set(subjects))} are training/eval subjects")
    manager = stages.restrict_test_split(manager_full, subjects, cfg.max_expressions)
    n_scans = sum(len(manager.test_expressions(s)) for s in subjects)
    log(f"test subjects {subjects}: {n_scans} scans")
    failures += stages.ensure_observations(manager, subjects, cfg.observation_seed, cfg.workers, log)
    runs = [run_method(cfg, key, cfg.out_dir / "fits" / key, manager_full, manager, subjects, log)
            for key in ALL_METHODS if key in cfg.methods]
    items = _picture_items(manager, subjects, cfg.pictures)
    pictures = stages.comparison_pictures(cfg.out_dir / "pictures", manager, runs, [[i] for i in items],
                                          [f"{s}_{e}" for s, e in items],
                                          [f"subject {s}, expression {e}" for s, e in items])
    path = write_report(cfg, runs, subjects, n_scans, pictures, failures, time.perf_counter() - start)
    return path, runs


__all__ = [
    "ALL_METHODS", "METHOD_LABELS", "NEURAL_METHODS", "NeuralMethod", "QualityConfig", "TRAIN_POLICIES",
    "benchmark_subjects", "claim_output", "ensure_models", "metric_table", "run_method", "run_quality",
    "write_report",
]
