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
from .schur import (
    dense_lower_from_csc,
    n_syrk_chunks,
    schur_diag_blocks,
    schur_first_block,
    schur_first_condvar,
    schur_first_inverse_trace,
    schur_pattern_nnz,
    schur_solve_lower,
    schur_solve_upper,
    schur_trailing_rows,
    sparse_syrk_lower,
    syrk_plan,
)
from .sparse import (
    fill_scaled_gram,
    fill_scaled_scalar,
    lookup_entries,
    selected_inverse,
)

__all__ = [
    "blockdiag_modes",
    "blockdiag_objective",
    "blockdiag_update",
    "blockdiag_update_serial",
    "dense_lower_from_csc",
    "factor_crossprod",
    "factor_crossprod_serial",
    "fill_scaled_gram",
    "fill_scaled_scalar",
    "lookup_entries",
    "n_level_chunks",
    "n_row_chunks",
    "n_syrk_chunks",
    "pair_crossprod",
    "profiled_criterion",
    "schur_diag_blocks",
    "schur_first_block",
    "schur_first_condvar",
    "schur_first_inverse_trace",
    "schur_pattern_nnz",
    "schur_solve_lower",
    "schur_solve_upper",
    "schur_trailing_rows",
    "selected_inverse",
    "sparse_syrk_lower",
    "syrk_plan",
]
