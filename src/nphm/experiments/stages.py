"""The stages of an end-to-end run, each a function: data, observations, fitting a method,
evaluation, pictures.

The quality benchmark (:mod:`nphm.experiments.quality`) and the demo
(:mod:`nphm.experiments.demo`) are sequences of these stages; the release's fitting script
uses :func:`fit_neural`. Every stage skips work that is already on disk (so an interrupted run
resumes), never stops for one broken item, and returns or logs what failed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from nphm import layout
from nphm.data import DataManager
from nphm.evaluation.pipeline import EvalSettings
from nphm.layout import ItemResult
from nphm.utils.io import PathLike

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------ data
def ensure_dataset(data_dir: Path, single_view_dir: Path, n_subjects: int, n_expressions: int, seed: int,
                   workers: int = 1, log: Log = print, source: str = "procedural") -> Tuple[DataManager, List[str]]:
    """The :class:`~nphm.data.DataManager` of ``data_dir``; the synthetic set (heads of
    ``source``, see :func:`nphm.data.synthetic.writer.get_source`) is generated first when the
    folder has no ``dataset.json``. Returns the manager and the failures."""
    failures: List[str] = []
    if not (Path(data_dir) / "dataset.json").is_file():
        from nphm.data.synthetic import generate_dataset

        log(f"generating the synthetic set ({source} heads): {n_subjects} subjects x {n_expressions} expressions, "
            f"seed {seed} -> {data_dir}")
        report = generate_dataset(data_dir, n_subjects=n_subjects, n_expressions=n_expressions, seed=seed,
                                  workers=workers, source=source)
        failures += _generation_failures(report, log)
    return DataManager(data_dir, None, single_view_dir), failures


def regenerate_subjects(data_dir: Path, subjects: Sequence[int], n_expressions: int, seed: int,
                        log: Log = print, source: str = "procedural") -> Tuple[DataManager, List[str]]:
    """Regenerate single subjects of a synthetic set (same source, seed and ids: the same
    scans) into ``data_dir``, all in its test split; finished scans are skipped. Returns the
    DataManager (observations in ``data_dir/single_view``) and the failures."""
    from nphm.data.synthetic.writer import ASSET_FILES, build_description, generate_dataset
    from nphm.utils.io import save_json

    failures: List[str] = []
    for subject in tqdm(subjects, desc="synthetic test heads", unit="subject"):
        report = generate_dataset(data_dir, n_subjects=1, n_expressions=n_expressions, seed=seed,
                                  first_subject=subject, progress=False, source=source)
        failures += _generation_failures(report, log)
    description = build_description(list(subjects), n_expressions, seed, dict(ASSET_FILES), source)
    description.update(subjects_train=[], subjects_eval=[], subjects_test=list(subjects))
    save_json(Path(data_dir) / "dataset.json", description)
    return DataManager(data_dir, None, Path(data_dir) / "single_view"), failures


def _generation_failures(report, log: Log) -> List[str]:
    out = []
    for subject, expression, message in report.failures:
        out.append(f"generating scan {subject}/{expression}: {message.splitlines()[0]}")
        log(f"FAILED {out[-1]}")
    return out


def restrict_test_split(manager, subjects: Sequence[int], max_expressions: Optional[int] = None):
    """A DataManager whose test split is ``subjects`` with at most ``max_expressions`` test
    expressions each (the rest are marked invalid for testing); the data are unchanged."""
    import dataclasses

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


# ---------------------------------------------------------------------------- observations
def ensure_observations(manager, subjects: Sequence[int], seed: int = 0, workers: int = 1,
                        log: Log = print) -> List[str]:
    """Render the single-view observations that are missing; returns the failures."""
    from nphm.preprocessing.observations import generate_observations, plan

    n_items = len(plan(manager, subjects)[0])
    failures = []
    for r in tqdm(generate_observations(manager, subjects, seed=seed, workers=workers), total=n_items,
                  desc="single-view observations", unit="scan"):
        if r.status == "failed":
            failures.append(f"observation {r.subject}/{r.expression}: {r.message}")
            log(f"FAILED {failures[-1]}")
    return failures


# --------------------------------------------------------------------------------- fitting
@dataclass
class MethodRun:
    """What fitting (and evaluating) one method on the test subjects gave.

    Attributes:
        key, label: method id ("nphm", "npm", "pca") and its name in reports.
        results_dir: its fits (:mod:`nphm.layout`); None when the method could not run.
        models: which models / settings were used (one line for reports).
        info: details for reports (experiments and epochs, steps, device).
        outcomes: per-subject fitting outcomes; failures: what went wrong, one line each.
        totals: evaluation means ``{"head": {...}, "face": {...}}``; note: why something is missing.
    """

    key: str
    label: str
    results_dir: Optional[Path] = None
    models: str = ""
    info: Dict[str, object] = field(default_factory=dict)
    outcomes: List[ItemResult] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    totals: Dict[str, Dict[str, float]] = field(default_factory=dict)
    note: str = ""
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def fit_seconds(self) -> List[float]:
        """Wall time of every subject fitted in this run (fit, meshing, picture)."""
        return [o.seconds for o in self.outcomes if o.status == "done"]

    def record(self, outcome: ItemResult, log: Log) -> None:
        """Keep one subject's outcome and log it."""
        self.outcomes.append(outcome)
        if outcome.status == "failed":
            self.failures.append(f"subject {outcome.subject}: {outcome.message}")
            log(f"FAILED {self.label} subject {outcome.subject}: {outcome.message}")
        elif outcome.status == "done":
            log(f"{self.label} subject {outcome.subject}: {len(outcome.expressions)} expressions in "
                f"{outcome.seconds:.0f} s")


def load_fitting_run(fitting_config: PathLike, experiment_dir: Optional[PathLike], device="auto",
                     seed: Optional[int] = 0, steps: Optional[int] = None, step_scale: Optional[float] = None):
    """Load a fitting config and the models it names: ``(config, models, device)``.

    ``steps`` / ``step_scale`` override the config's; the torch seed is set to ``seed`` before
    loading (None: left as it is).
    """
    from nphm.fitting.io import load_fitting_config, load_models
    from nphm.utils.device import resolve_device

    cfg = load_fitting_config(fitting_config)
    if steps is not None:
        cfg = cfg.with_settings(steps=int(steps))
    if step_scale is not None:
        cfg = cfg.with_settings(step_scale=float(step_scale))
    device = resolve_device(device)
    if seed is not None:
        torch.manual_seed(seed)
    models = load_models(cfg, device, experiment_dir)
    return cfg, models, device


def describe_models(cfg, models) -> Dict[str, str]:
    """``{"identity": "name (epoch N)", "expression": ...}`` of a loaded fitting run."""
    out = {"identity": f"{cfg.exp_name_shape} (epoch {models.epochs['shape']})"}
    if "expr" in models.epochs:
        out["expression"] = f"{cfg.exp_name_expr} (epoch {models.epochs['expr']})"
    return out


def fit_neural(run: MethodRun, fitting_config: PathLike, experiment_dir: Optional[PathLike], manager,
               subjects: Sequence[int], resolution: int = 256, seed: int = 0, device: str = "auto",
               step_scale: Optional[float] = None, overwrite: bool = False, figure: bool = True,
               log: Log = tqdm.write) -> None:
    """Fit NPHM or NPM (the models a fitting config names) to every subject's observations,
    writing into ``run.results_dir``; fills ``run``'s models, info and outcomes."""
    from nphm.fitting import io as fio
    from nphm.fitting.pipeline import fit_subjects

    cfg, models, device = load_fitting_run(fitting_config, experiment_dir, device, seed, step_scale=step_scale)
    settings = cfg.settings
    names = describe_models(cfg, models)
    run.info.update(method=cfg.method, models=names, steps=settings.n_iterations, release_steps=settings.steps,
                    points_per_step=f"{settings.observations_per_step} x {settings.points_per_observation}",
                    device=str(device))
    run.models = " + ".join(names.values()) + f"; {settings.n_iterations} fitting steps, marching cubes " \
                                              f"{resolution}^3"
    fio.save_config_copy(run.results_dir, cfg)
    log(f"models: {' + '.join(names.values())}; device {device}; {settings.n_iterations} fitting steps")
    for outcome in fit_subjects(manager, models, subjects, settings, run.results_dir, resolution, seed,
                                overwrite=overwrite, figure=figure):
        run.record(outcome, log)


def fit_linear(run: MethodRun, model_path: Path, manager_train, manager, subjects: Sequence[int], settings,
               components: Tuple[Optional[int], Optional[int]], overwrite: bool = False, figure: bool = True,
               log: Log = tqdm.write) -> None:
    """Fit the linear baseline (PCA over the training registrations, built once and stored at
    ``model_path``) to every subject's observations, writing into ``run.results_dir``."""
    from nphm.baselines.pca import LinearHeadModel, linear_model_from_dataset
    from nphm.baselines.runner import fit_pca_subjects

    if model_path.is_file() and not overwrite:
        model = LinearHeadModel.load(model_path)
    else:
        model = linear_model_from_dataset(manager_train, manager_train.subjects("train"), *components,
                                          progress=True)
        model.save(model_path)
    run.models = (f"{model.n_id} identity + {model.n_ex} expression components from "
                  f"{model.info.get('n_neutrals')} training subjects / {model.info.get('n_offsets')} expression "
                  f"scans; {settings.iterations} closest-point iterations")
    for outcome in fit_pca_subjects(manager, model, subjects, settings, run.results_dir, overwrite=overwrite,
                                    figure=figure):
        run.record(outcome, log)


# ------------------------------------------------------------------------------ evaluation
def evaluate(run: MethodRun, manager, subjects: Sequence[int], settings: EvalSettings, cache_dir: Path,
             overwrite: bool = False, figures: bool = True, log: Optional[Log] = None):
    """Evaluate ``run.results_dir`` (render-based, full head and face) and put the means into
    ``run.totals``; returns the gathered tables (None when nothing was evaluated)."""
    from nphm.evaluation.gather import gather
    from nphm.evaluation.pipeline import evaluate_results_dir

    summary = evaluate_results_dir(run.results_dir, manager, settings, subjects=subjects, cache_dir=cache_dir,
                                   overwrite=overwrite, figures=figures, log=log)
    for f in summary.failed:
        run.failures.append(f"evaluation of {f['subject']}/{f['expression']}: {f['error']}")
    try:
        gathered = gather(run.results_dir, subjects)
    except FileNotFoundError as e:
        run.note = f"nothing evaluated ({e})"
        return None
    run.totals = gathered.totals
    return gathered


# -------------------------------------------------------------------------------- pictures
def comparison_pictures(out_dir: Path, manager, runs: Sequence[MethodRun], items: Sequence[Sequence[Tuple[int, int]]],
                        names: Sequence[str], titles: Sequence[str]) -> List[Path]:
    """One picture per group of scans: every ground-truth scan and every method's fit of it
    (front above side; the fit's full-head Chamfer-L1 when evaluated).

    The longer of the two lists runs across: a group of several scans (the demo: one subject's
    expressions) gets a column per scan, the scans in the top row and each method's fits in a
    row below; a single scan (the benchmark) gets a column per method.

    Args:
        items: per picture the (subject, expression) scans it shows; names: file stems;
        titles: a caption per picture.
    """
    from nphm.pictures import render_mesh_grid

    shown = [r for r in runs if r.results_dir is not None]
    paths = []
    for group, name, title in tqdm(list(zip(items, names, titles)), desc="pictures", unit="picture"):
        rows = [[_scan_tile(manager, s, e) for s, e in group]] + [[_fit_tile(r, s, e) for s, e in group]
                                                                 for r in shown]
        if len(group) < len(rows):  # a column per source instead
            rows = [list(column) for column in zip(*rows)]
        path = Path(out_dir) / f"{name}.png"
        render_mesh_grid(path, [tile for row in rows for tile in row], title=title, max_columns=len(rows[0]))
        paths.append(path)
    return paths


def _scan_tile(manager, subject: int, expression: int):
    return f"scan {subject}_{expression}", manager.load_scan(subject, expression)


def _fit_tile(run: MethodRun, subject: int, expression: int):
    """(label, mesh) of a method's fit of one scan; the mesh is None when there is no fit."""
    from nphm.data.manager import load_mesh

    pred = layout.find_prediction(run.results_dir, subject, expression)
    if pred is None:
        return f"{run.label}: no fit", None
    metrics = layout.metrics_path(run.results_dir, subject, expression)
    cd = json.loads(metrics.read_text()).get("chamfer_l1") if metrics.is_file() else None
    return f"{run.label} fit" + (f" ({cd:.2f} mm)" if cd is not None else ""), load_mesh(pred)


__all__ = [
    "Log", "MethodRun", "comparison_pictures", "describe_models", "ensure_dataset", "ensure_observations",
    "evaluate", "fit_linear", "fit_neural", "load_fitting_run", "regenerate_subjects", "restrict_test_split",
]
