"""Helpers of the tests (no tests here), imported as ``support.*`` (``tests`` is on the path).

- :mod:`support.toy_models`: toy heads and expressions on :mod:`nphm.analytic` shapes, as models;
- :mod:`support.toy_training`: NPM-style networks trained on them;
- :mod:`support.recovery`: fitting a model to renderings of its own meshes, Chamfer errors;
- :mod:`support.training_fixtures`: the tiny dataset and tiny configs of the training tests.

The library never imports them (``tests/test_structure.py``).
"""
