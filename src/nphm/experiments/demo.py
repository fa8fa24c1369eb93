"""End-to-end demo: held-out synthetic heads fitted with the shipped pretrained NPHM (or NPM).

A preset of the quality benchmark (:mod:`nphm.experiments.quality`): one method, the shipped
models, no training, fewer steps and a cheaper evaluation. Steps (each skips finished work, so
an interrupted demo resumes):

1. data: the first test identities of the set the shipped models were trained on are
   regenerated (same generator, seed and subject ids: identical scans) into ``out/data``;
2. observations: their single-view point clouds (release protocol);
3. fitting: identity + expression latents per subject from the point clouds (the CPU fitting
   config, optionally fewer steps), canonical mesh by marching cubes, posed meshes;
4. evaluation: render-based full-head and face-region metrics against the scans;
5. report: ``out/report.md`` with the metric tables, renders and the settings used.

Output::

    out/data/                   generated scans (+ single_view/ observations)
    out/fits/                   fits in the layout of :mod:`nphm.layout` (meshes, latents,
                                {s}.png observations over the fits, evaluation/)
    out/renders/{s}.png         each ground-truth scan beside its fit, front and side
    out/report.md, settings.json
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tqdm import tqdm

from nphm.evaluation.pipeline import EvalSettings
from nphm.experiments import stages
from nphm.experiments.quality import METHOD_LABELS, QualityConfig, claim_output, metric_table, run_method
from nphm.experiments.stages import MethodRun
from nphm.utils.tables import format_metric, markdown_table

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

    def method_key(self) -> str:
        """"nphm" or "npm": the kind of identity model the fitting config names."""
        from nphm.fitting.io import load_fitting_config

        return load_fitting_config(self.fitting_config).method.lower()

    def quality_config(self) -> QualityConfig:
        """The benchmark settings of this demo: one method, the shipped models, no training."""
        data = self.out_dir / "data"
        key = self.method_key()
        return QualityConfig(
            out_dir=self.out_dir, data_dir=data, single_view_dir=data / "single_view", experiment_dir=self.models_dir,
            supervision_identity=self.out_dir / "unused", supervision_deformation=self.out_dir / "unused",
            config_dir=self.fitting_config.parent, methods=(key,), fitting_configs={key: self.fitting_config},
            observation_seed=self.observation_seed, fitting_seed=self.fitting_seed, step_scale=self.step_scale,
            resolution=self.resolution, evaluation=self.evaluation, evaluation_figures=True, train="never",
            device=self.device, pictures=self.n_subjects, overwrite=self.overwrite)


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
            # descriptions written before there were two sources are of procedural heads
            "source": str(synthetic.get("source", "procedural")),
            "fingerprints": data.get("held_out_fingerprints") or {}}


def write_report(cfg: DemoConfig, info: Dict[str, object], run: MethodRun, renders: List[Path],
                 failures: List[str], seconds: Dict[str, float]) -> Path:
    """``out/report.md``: what was run, the metric tables, pictures and timings."""
    from nphm.evaluation.gather import per_subject_markdown
    from nphm.utils.io import atomic_path

    ev = cfg.evaluation
    fit = run.info
    method = run.label
    gathered = run.info.get("gathered")
    names = info.get("expression_names") or []
    expr_text = ", ".join(f"{e} ({names[e]})" if e < len(names) else str(e) for e in range(info["n_expressions"]))
    models = fit.get("models", {})
    lines = [
        f"# {method} demo: fitting held-out synthetic heads from single-view point clouds", "",
        f"- Test identities {info['subjects']} of the synthetic set the shipped models were trained on "
        f"(seed {info['seed']}, {info['n_train_subjects']} subjects; these are in its test split, never used for "
        f"training), expressions {expr_text}.",
        "- Input per scan: one frontal depth view (2500 points), plus a view from behind for the first "
        "expression (the release's protocol).",
        f"- Models: `{_shown(cfg.models_dir)}`: " + " + ".join(models.values()) + ".",
        f"- Fitting: joint identity + expression latents, {fit.get('steps')} Adam steps with the release's "
        f"schedules compressed accordingly (release: {fit.get('release_steps')} steps), "
        f"{fit.get('points_per_step')} points per step; marching cubes at {cfg.resolution}^3 over the fitting box; "
        f"device {fit.get('device')}.",
        f"- Evaluation: the release's render-based protocol with {ev.n_views} views at image scale "
        f"{ev.resolution_scale} and {ev.n_samples} samples (release: 1.0 and 250000); distances in mm.", "",
        "## Metrics (mean over all scans)", "",
        "Full head:", "", metric_table([run], "head"), "",
        "Face region:", "", metric_table([run], "face"), "",
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
    all_failures = list(failures) + run.failures + ([run.note] if run.note and not run.totals else [])
    if all_failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in all_failures] + [""]
    lines += ["## Wall time", "", "This invocation (work finished by an earlier run of the same settings is reused, "
              "not repeated):", "",
              markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in seconds.items()],
                             cell=format_metric), ""]
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


def run_demo(cfg: DemoConfig, log=tqdm.write) -> Path:
    """Run the demo (module docstring); returns the report path.

    A failing item (a scan, a subject) is reported and the others continue; the report is
    written in any case, and :class:`DemoFailure` (holding its path) is raised at the end when
    something failed."""
    from nphm.pretrained import fingerprint_mismatches

    start = time.perf_counter()
    seconds: Dict[str, float] = {}
    claim_output(cfg, cfg.result_settings(), "use another --out or --overwrite")
    qcfg = cfg.quality_config()
    train = training_set(cfg.models_dir)
    subjects = train["subjects_test"][:cfg.n_subjects]
    n_expressions = min(cfg.n_expressions, train["n_expressions"])
    log(f"demo: test subjects {subjects} x {n_expressions} expressions (synthetic seed {train['seed']}) "
        f"-> {cfg.out_dir}")

    t = time.perf_counter()
    manager, failures = stages.regenerate_subjects(qcfg.data_dir, subjects, n_expressions, train["seed"], log,
                                                   train["source"])
    seconds["synthetic heads"] = time.perf_counter() - t
    mismatches = fingerprint_mismatches(manager, train["fingerprints"], subjects)
    if not train["fingerprints"]:
        mismatches = ["the training set description has no fingerprints: regenerated heads were not checked"]
    for line in mismatches:
        log(f"WARNING: {line}: not the exact test head of the training run (the synthetic generator changed "
            "since the models were trained); still an identity the models never saw")
    t = time.perf_counter()
    failures += stages.ensure_observations(manager, subjects, cfg.observation_seed, log=log)
    seconds["observations"] = time.perf_counter() - t

    key = qcfg.methods[0]
    run = run_method(qcfg, key, cfg.out_dir / "fits", manager, manager, subjects, log, eval_log=log)
    seconds["fitting + meshing"] = run.seconds.get("fitting", 0.0)
    seconds["evaluation"] = run.seconds.get("evaluation", 0.0)

    t = time.perf_counter()
    groups = [[(s, e) for e in manager.test_expressions(s)] for s in subjects]
    renders = stages.comparison_pictures(cfg.out_dir / "renders", manager, [run], groups,
                                         [str(s) for s in subjects],
                                         [f"subject {s}: scans (top), {METHOD_LABELS[key]} fits (bottom)"
                                          for s in subjects])
    seconds["renders"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    info = {"subjects": subjects, "seed": train["seed"], "n_train_subjects": train["n_subjects"],
            "n_expressions": n_expressions, "expression_names": train["expression_types"], "warnings": mismatches}
    report = write_report(cfg, info, run, renders, failures, {k: round(v, 1) for k, v in seconds.items()})
    if failures or run.failures or not run.totals:
        raise DemoFailure(report, failures + run.failures + ([run.note] if run.note else []))
    return report


class DemoFailure(RuntimeError):
    """Some items of the demo failed; the report was still written (``report``)."""

    def __init__(self, report: Path, failures: List[str]) -> None:
        super().__init__(f"{len(failures)} failure(s), see {report}: " + "; ".join(failures[:3]))
        self.report = report
        self.failures = failures


__all__ = ["DemoConfig", "DemoFailure", "TRAINING_DESCRIPTION", "run_demo", "training_set", "write_report"]
