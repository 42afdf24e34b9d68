"""Synthetic data for bigmixed: the seeds' hdp-style example at any size
(optionally with binary / count outcomes for GLMMs), the seeds' tablet data
(:mod:`bigmixed.data_gen.generate`), and longitudinal
data with AR(1) / CAR(1) / compound-symmetry residuals and arm-specific residual
SDs (:mod:`bigmixed.data_gen.longitudinal`)."""

from .generate import (
    BINARY_BETA,
    BINARY_DOCTOR_SD,
    BINARY_LINKS,
    COUNT_BETA,
    SEED_BETA,
    SEED_N_DOCTORS,
    SEED_N_PATIENTS,
    GeneratedData,
    generate_hdp,
    tablets,
)
from .longitudinal import (
    LONGITUDINAL_BETA,
    LongitudinalData,
    generate_longitudinal,
)

__all__ = [
    "GeneratedData",
    "generate_hdp",
    "tablets",
    "SEED_BETA",
    "SEED_N_DOCTORS",
    "SEED_N_PATIENTS",
    "BINARY_BETA",
    "BINARY_DOCTOR_SD",
    "BINARY_LINKS",
    "COUNT_BETA",
    "LongitudinalData",
    "generate_longitudinal",
    "LONGITUDINAL_BETA",
]
