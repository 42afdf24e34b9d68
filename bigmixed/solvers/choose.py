"""Which system serves a model (solver="auto"), and the systems by name."""
from __future__ import annotations

from collections.abc import Mapping

from ..crossprods.crossprod import CrossProducts
from ..spec.structure import RandomEffectsStructure


class _Systems(Mapping):
    """name -> System class, each module imported on first use (the sparse systems load
    scipy.sparse, ~0.13 s at start-up, which a one-factor model never needs)."""

    _where = {"blockdiag": ("blockdiag", "BlockDiagonalSystem"),
              "cholmod": ("cholmod", "SparseSystem"), "schur": ("schur", "SchurSystem")}

    def __getitem__(self, name):
        import importlib

        module, cls = self._where[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


SYSTEMS = _Systems()


def auto_solver(cp: CrossProducts, structure: RandomEffectsStructure) -> str:
    """solver="auto": "blockdiag" for one grouping factor; "schur" for several when the other
    factors than the one with most random effects have at most SCHUR_MAX_DENSE effects in all
    and their Schur complement is not sparse (at least SCHUR_MIN_DENSITY of its lower triangle
    structurally nonzero: crossed factors); "cholmod" otherwise (nested factors, many levels)."""
    if len(structure.factors) == 1:
        return "blockdiag"
    from .schur import SCHUR_MAX_DENSE, SCHUR_MIN_DENSITY, schur_block_density

    r, density = schur_block_density(cp, structure, stop_early=True)
    return "schur" if 0 < r <= SCHUR_MAX_DENSE and density >= SCHUR_MIN_DENSITY else "cholmod"
