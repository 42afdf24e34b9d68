"""Fitting beyond one machine's memory: a Dask DataFrame in, a fit out (see `model` for the
passes over the partitions). Public: `lmm_dask` (what ``bm.lmm`` calls for Dask data),
`local_cluster`, `is_dask_dataframe`."""
from .cluster import local_cluster
from .model import lmm_dask
from .plan import is_dask_dataframe

__all__ = ["is_dask_dataframe", "lmm_dask", "local_cluster"]
