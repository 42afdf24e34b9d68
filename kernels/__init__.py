"""Numba compute kernels. Raw arrays in, caller-owned ``*_out`` buffers out; no scipy or pandas."""
from .blockdiag import (
    blockdiag_modes,
    blockdiag_objective,
    blockdiag_update,
    blockdiag_update_serial,
    n_level_chunks,
    profiled_criterion,
)
from .crossprod import factor_crossprod, factor_crossprod_serial, n_row_chunks, pair_crossprod
from .sparse import fill_scaled_gram, lookup_entries, selected_inverse

__all__ = [
    "blockdiag_modes",
    "blockdiag_objective",
    "blockdiag_update",
    "blockdiag_update_serial",
    "factor_crossprod",
    "factor_crossprod_serial",
    "fill_scaled_gram",
    "lookup_entries",
    "n_level_chunks",
    "n_row_chunks",
    "pair_crossprod",
    "profiled_criterion",
    "selected_inverse",
]
