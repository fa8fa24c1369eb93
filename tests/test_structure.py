"""Package structure, checked on the source (parsed with ``ast``, nothing imported).

* The release-style reference code (:mod:`nphm.reference`) is a baseline of the benchmarks and
  the tests: the library does not use it, only the modules of :data:`REFERENCE_USERS` (and the
  package itself).
* Nothing under ``src/nphm`` imports test code (``tests``, ``support``, ``conftest``).
* Three layers: the library never imports the runs (:mod:`nphm.experiments`) or the command
  line (:mod:`nphm.cli`), the runs never import the command line; no module imports the root
  ``env_paths.py`` (paths are :mod:`nphm.paths`).
* ``scripts/`` are thin wrappers of :mod:`nphm.cli` and never patch ``sys.path``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "nphm"
#: the reference implementations themselves
REFERENCE_PACKAGE = "nphm/reference/"
#: modules (files, or folders ending in "/") allowed to import nphm.reference, relative to src/;
#: tighten by removing entries
REFERENCE_USERS = ("nphm/experiments/",)
#: the layers above the library, lowest first: a layer may import those below it only
LAYERS = ("nphm.experiments", "nphm.cli")
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
#: top-level names of the test code
TEST_PACKAGES = ("tests", "support", "conftest")


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Absolute names of the modules that the source of ``module`` (dotted) imports: ``import``
    and ``from`` statements anywhere (relative ones resolved; ``from a import b`` yields ``a`` and
    ``a.b``) and ``importlib.import_module`` / ``__import__`` calls with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _modules() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> List[str]:
    rel = path.relative_to(SRC).with_suffix("")
    is_package = rel.name == "__init__"
    module = ".".join(rel.parent.parts if is_package else rel.parts)
    return list(imported_modules(path.read_text(encoding="utf-8"), module, is_package))


def _allowed_reference_user(path: Path) -> bool:
    rel = path.relative_to(SRC).as_posix()
    allowed = REFERENCE_USERS + (REFERENCE_PACKAGE,)
    return any(rel.startswith(entry) if entry.endswith("/") else rel == entry for entry in allowed)


def test_import_scanner_finds_every_form():
    source = "\n".join([
        "import nphm.reference.models",
        "from nphm import reference",
        "from ..reference.fitting import reference_joint_loss",
        "def f():",
        "    from support.toy_models import MEAN_HEAD",
        "    importlib.import_module('tests.support')",
    ])
    found = set(imported_modules(source, "nphm.fitting.somewhere"))
    assert {"nphm.reference.models", "nphm.reference", "nphm.reference.fitting", "support.toy_models",
            "tests.support"} <= found
    assert set(imported_modules("from . import x", "nphm.fitting", is_package=True)) == {"nphm.fitting",
                                                                                         "nphm.fitting.x"}


def test_scanned_package_is_the_library():
    paths = {p.relative_to(SRC).as_posix() for p in _modules()}
    assert {"nphm/__init__.py", "nphm/reference/models.py", "nphm/reference/fitting.py",
            "nphm/experiments/speed.py", "nphm/experiments/fitting_speed.py"} <= paths
    # the baselines are used where they are allowed (else the scanner would see nothing)
    assert "nphm.reference.models" in _imports(PACKAGE / "experiments" / "speed.py")


def test_library_does_not_import_the_reference_code():
    offenders = [
        f"{path.relative_to(SRC)}: {name}"
        for path in _modules() if not _allowed_reference_user(path)
        for name in _imports(path) if _within(name, "nphm.reference")
    ]
    assert not offenders, "only the modules of REFERENCE_USERS may import nphm.reference:\n" + "\n".join(offenders)


def test_library_does_not_import_test_code():
    offenders = [
        f"{path.relative_to(SRC)}: {name}"
        for path in _modules()
        for name in _imports(path) if any(_within(name, top) for top in TEST_PACKAGES)
    ]
    assert not offenders, "src/nphm must not import test code:\n" + "\n".join(offenders)


def _layer(path: Path) -> int:
    """0 for the library, 1 + the index in :data:`LAYERS` for the layers above it."""
    rel = path.relative_to(SRC).with_suffix("").as_posix().replace("/", ".")
    return next((i + 1 for i, layer in enumerate(LAYERS) if _within(rel, layer)), 0)


def test_layers_import_only_downwards():
    offenders = [
        f"{path.relative_to(SRC)}: {name}"
        for path in _modules()
        for name in _imports(path)
        for i, layer in enumerate(LAYERS) if _within(name, layer) and i + 1 > _layer(path)
    ]
    assert not offenders, "the library must not import the runs or the command line:\n" + "\n".join(offenders)
    # the check sees the layers (else it would pass vacuously)
    assert _layer(PACKAGE / "experiments" / "quality.py") == 1 and _layer(PACKAGE / "cli" / "demo.py") == 2
    assert any(_within(n, "nphm.experiments") for n in _imports(PACKAGE / "cli" / "demo.py"))


def test_nothing_imports_the_root_env_paths():
    offenders = [f"{path.relative_to(SRC)}" for path in _modules() if "env_paths" in _imports(path)]
    offenders += [f"{path.relative_to(SCRIPTS.parent)}" for path in SCRIPTS.rglob("*.py")
                  if "env_paths" in set(imported_modules(path.read_text(encoding="utf-8"), path.stem))]
    assert not offenders, "use nphm.paths, not the root env_paths.py:\n" + "\n".join(offenders)


def test_scripts_are_thin_wrappers_of_the_cli():
    scripts = sorted(SCRIPTS.rglob("*.py"))
    assert len(scripts) >= 17
    for path in scripts:
        source = path.read_text(encoding="utf-8")
        assert "sys.path" not in source, f"{path} patches sys.path"
        imported = set(imported_modules(source, path.stem))
        cli = f"nphm.cli.{path.stem}"
        assert cli in imported and (PACKAGE / "cli" / f"{path.stem}.py").is_file(), f"{path} does not wrap {cli}"
        assert imported <= {"sys", cli, f"{cli}.main"}, f"{path} does more than wrap {cli}: {sorted(imported)}"


def test_root_env_paths_re_exports_the_package_paths():
    import env_paths
    from nphm import paths

    assert env_paths.__all__ == paths.__all__
    assert all(getattr(env_paths, name) == getattr(paths, name) for name in paths.__all__)
