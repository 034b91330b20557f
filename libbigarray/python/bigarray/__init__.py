"""bigarray: a transactional out-of-core array store. Arrays live in a database (a directory),
split into blocks, and are mapped into memory on demand: indexing an Array gives a
numpy.ndarray view into the mapped region, without copying. See docs/python.md.

The package is the extension module bigarray._bigarray (Database, Array, View, open, ...),
re-exported here, plus Python parts it hands out: attribute mappings (Array.attrs,
Database.attrs: bigarray.AttributeManager), group views (Database.group: bigarray.Group),
dask arrays (Array.to_dask) and the xarray bridge (bigarray.xarray, imported on demand).
"""
from ._bigarray import (  # noqa: F401
    Array,
    Attrs,
    BlockIterator,
    ConflictError,
    CorruptionError,
    Database,
    Error,
    Follow,
    Transaction,
    View,
    __version__,
    compact,
    handles,
    open,
)
from ._attrs import AttributeManager  # noqa: F401
from ._groups import Group  # noqa: F401

__all__ = ["open", "handles", "compact", "Database", "Array", "View", "Group", "AttributeManager", "Error",
           "ConflictError", "CorruptionError", "__version__"]
