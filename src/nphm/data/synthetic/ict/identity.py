"""Identities of the ICT heads: identity-mode weights and a hair style per subject.

The weights of the model's 100 identity modes are N(0, 1) (the kit's own sampler; the modes
are PCA modes of real light-stage scans), clipped at +-3 so that no head is extreme; the hair
style comes from :func:`nphm.data.synthetic.ict.hair.sample_hair_style`. Both depend only on
their random streams, i.e. on (seed, subject).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from nphm.data.synthetic.ict.hair import HairStyle, sample_hair_style

#: identity weights are clipped to +-WEIGHT_CLIP standard deviations
WEIGHT_CLIP = 3.0


@dataclass(frozen=True)
class IctIdentity:
    """One subject: ``weights`` (K,) of the identity modes and its ``hair`` style."""

    weights: np.ndarray
    hair: HairStyle


def sample_identity(weights_rng: np.random.Generator, hair_rng: np.random.Generator, n_modes: int) -> IctIdentity:
    """A random identity: N(0, 1) weights of ``n_modes`` modes (clipped) and a hair style."""
    weights = np.clip(weights_rng.standard_normal(n_modes), -WEIGHT_CLIP, WEIGHT_CLIP)
    return IctIdentity(weights=weights, hair=sample_hair_style(hair_rng))
