"""Independent random streams per item, keyed by integers.

Every helper takes the run's ``seed`` first, then the parts of the item's key in the caller's
fixed order (e.g. ``subject, expression, stream``). The stream is drawn from
``np.random.SeedSequence([seed, *key])`` (every part cast to ``int``), so an item's draws
depend only on its key: not on which items ran before it, nor on the number of workers or
processes. Keys that differ in a part give unrelated streams; keys that differ only by trailing
zeros (``[1, 2]`` and ``[1, 2, 0]``) give the same one, as ``SeedSequence`` pads short entropy with
zeros: give every caller's keys one fixed length.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def item_key(seed: int, *key: int) -> List[int]:
    """The entropy ``[seed, *key]`` (ints) of an item's ``SeedSequence``."""
    return [int(seed), *(int(k) for k in key)]


def item_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """``np.random.SeedSequence([seed, *key])``."""
    return np.random.SeedSequence(item_key(seed, *key))


def item_generator(seed: int, *key: int) -> np.random.Generator:
    """NumPy generator of the item ``(seed, *key)``."""
    return np.random.default_rng(item_sequence(seed, *key))


def item_generators(seed: int, *key: int, n: int) -> Tuple[np.random.Generator, ...]:
    """``n`` independent generators of the item ``(seed, *key)`` (the sequence's spawned children)."""
    return tuple(np.random.default_rng(child) for child in item_sequence(seed, *key).spawn(n))


def item_seed(seed: int, *key: int) -> int:
    """Integer seed (uint32 range) of the item ``(seed, *key)``, e.g. for ``torch.Generator.manual_seed``."""
    return int(item_sequence(seed, *key).generate_state(1)[0])
