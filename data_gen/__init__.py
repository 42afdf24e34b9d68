"""Synthetic data for bigmixed: the seeds' hdp-style example at any size, and
the seeds' tablet data.  See :mod:`bigmixed.data_gen.generate`."""

from .generate import (
    SEED_BETA,
    SEED_N_DOCTORS,
    SEED_N_PATIENTS,
    GeneratedData,
    generate_hdp,
    tablets,
)

__all__ = [
    "GeneratedData",
    "generate_hdp",
    "tablets",
    "SEED_BETA",
    "SEED_N_DOCTORS",
    "SEED_N_PATIENTS",
]
