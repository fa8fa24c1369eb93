"""Runs built on the library: end-to-end jobs and benchmarks.

- :mod:`~nphm.experiments.stages`: the stages as functions (data, observations, fitting a method,
  evaluation, pictures);
- :mod:`~nphm.experiments.quality`: the quality benchmark (NPHM vs NPM vs a linear baseline);
- :mod:`~nphm.experiments.demo`: the demo, a preset of the benchmark (one method, the shipped
  models, no training);
- :mod:`~nphm.experiments.speed`, :mod:`~nphm.experiments.fitting_speed`: speed benchmarks
  against the straightforward implementations of :mod:`nphm.reference`, with the timing
  helpers of :mod:`~nphm.experiments.timing`.

The library below never imports this package.
"""
