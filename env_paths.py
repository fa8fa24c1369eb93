"""Every path the project uses: the release's ``env_paths`` module, kept for its habits.

The definitions live in :mod:`nphm.paths` (defaults inside this checkout, each overridable by
an ``NPHM_<NAME>`` environment variable); this file only re-exports them::

    import env_paths
    env_paths.DATA, env_paths.EXPERIMENT_DIR, ...
"""
from nphm.paths import *  # noqa: F401,F403
from nphm.paths import __all__  # noqa: F401
