"""A Dask LocalCluster sized to this machine."""
from __future__ import annotations

import os
from .plan import require_dask

# ======================================================================================
# A local cluster sized to the machine
# ======================================================================================


def _machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def local_cluster(memory_limit=None, n_workers: int | None = None, threads_per_worker: int = 1,
                  processes: bool = True, client: bool = True, **kwargs):
    """Start a dask.distributed LocalCluster sized to this machine and (by default) a Client.

    memory_limit: the *total* for all workers, bytes or a string such as "6GiB" (default: 3/4
    of the machine's memory); each worker gets an equal share. n_workers defaults to the
    number of cores, one thread each (the kernels are single-threaded inside a task).
    Returns the Client (which is then the active scheduler; ``client.cluster`` is the
    cluster), or the LocalCluster with client=False. Close it with ``.close()`` (and
    ``client.cluster.close()``) or use it as a context manager.
    """
    require_dask()
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    n_workers = int(n_workers or os.cpu_count() or 1)
    total = int(0.75 * _machine_memory()) if memory_limit is None else (
        parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit))
    per_worker = max(total // n_workers, 256 << 20)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=processes, memory_limit=per_worker, **kwargs)
    return Client(cluster) if client else cluster
