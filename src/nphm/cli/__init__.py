"""Command-line jobs: one module per job, each parsing the release's flags and calling the library
(or a run of :mod:`nphm.experiments`).

Every module has ``main(argv=None) -> int`` and is installed as a console command
(``nphm-train``, ``nphm-fitting-pointclouds``, ``nphm-eval``, ... see ``pyproject.toml``);
``scripts/`` keeps the release's file names as thin wrappers of the same modules.
:mod:`nphm.cli.common` holds the arguments several jobs share.
"""
