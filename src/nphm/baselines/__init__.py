"""Non-neural baselines for the quality benchmark."""
from nphm.baselines.pca import (
    LinearFit,
    LinearHeadModel,
    PCAFitSettings,
    build_linear_model,
    fit_linear_model,
    linear_model_from_dataset,
    pca_basis,
    solve_coefficients,
)

__all__ = [
    "LinearFit",
    "LinearHeadModel",
    "PCAFitSettings",
    "build_linear_model",
    "fit_linear_model",
    "linear_model_from_dataset",
    "pca_basis",
    "solve_coefficients",
]
