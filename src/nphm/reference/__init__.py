"""Straightforward release-style implementations, the baselines of the benchmarks and the tests.

Slow on purpose: every ensemble member on every point, latents copied to every point, Broyden
over all points, Jacobians by backward passes - the release's way, written independently of the
fast code paths so that the tests compare the library against different code doing the same
maths, and the speed benchmarks have the release's cost as their baseline.

- :mod:`~nphm.reference.models`: identity / DeepSDF evaluations (:func:`naive_nphm_sdf`, ...);
- :mod:`~nphm.reference.fitting`: a joint fitting step (:func:`reference_joint_loss`), Broyden
  over all points, backward-pass Jacobians.

The library itself never imports this package (only the benchmarks, the demo and the runs do,
see ``tests/test_structure.py``).
"""
