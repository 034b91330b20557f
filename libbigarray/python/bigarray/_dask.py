"""dask arrays over bigarray arrays (docs/python.md, "dask").

A.to_dask() is dask.array.from_array(A, chunks=A.chunks): each chunk is A[slices], an ndarray
view into the mapped array, read (page-faulted) when a task touches it, so a computation over
an array larger than RAM keeps to the handle's cache budget. Chunks are block-aligned along
the major axis, so no two chunks share a block.

Threading contract: one handle, many threads. dask's threaded scheduler reads chunks from
several threads; dask.array.store(x, A, lock=False) writes disjoint chunks from several
threads into this handle's transaction, and one db.commit() afterwards (not during) makes all
of it durable and visible. Do not commit, abort, resize or append while a computation runs.
"""
import numpy as np


def to_dask(array, chunks=None, name=None):
    """A dask array reading `array` lazily, chunked by `chunks` (default: array.chunks)."""
    import dask.array as da

    return da.from_array(array, chunks=array.chunks if chunks is None else chunks, name=name, lock=False,
                         asarray=True, meta=np.empty((0,) * array.ndim, dtype=array.dtype))
