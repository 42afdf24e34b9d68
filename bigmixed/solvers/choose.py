"""Which system serves a model (solver="auto"), and the systems by name."""
from __future__ import annotations

from ..crossprods.crossprod import CrossProducts
from ..spec.structure import RandomEffectsStructure
from .blockdiag import BlockDiagonalSystem
from .cholmod import SparseSystem
from .schur import SCHUR_MAX_DENSE, SCHUR_MIN_DENSITY, SchurSystem, schur_block_density

SYSTEMS = {"blockdiag": BlockDiagonalSystem, "cholmod": SparseSystem, "schur": SchurSystem}


def auto_solver(cp: CrossProducts, structure: RandomEffectsStructure) -> str:
    """solver="auto": "blockdiag" for one grouping factor; "schur" for several when the other
    factors than the one with most random effects have at most SCHUR_MAX_DENSE effects in all
    and their Schur complement is not sparse (at least SCHUR_MIN_DENSITY of its lower triangle
    structurally nonzero: crossed factors); "cholmod" otherwise (nested factors, many levels)."""
    if len(structure.factors) == 1:
        return "blockdiag"
    r, density = schur_block_density(cp, structure, stop_early=True)
    return "schur" if 0 < r <= SCHUR_MAX_DENSE and density >= SCHUR_MIN_DENSITY else "cholmod"
