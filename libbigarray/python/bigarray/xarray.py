"""xarray over bigarray (docs/python.md, "xarray"): lazily loaded DataArrays and Datasets.

An array is a variable; its attribute "_ARRAY_DIMENSIONS" names its dimensions (the zarr
convention), and the arrays of the same group named after a dimension, with that one
dimension, are its coordinates. Other attributes are the variable's attrs, decoded with the CF
conventions as xarray's own backends do (times stored as numbers with units "days since ...",
_FillValue, scale_factor, the "coordinates" attribute); a group's attributes are the
Dataset's attrs.

open_dataarray(db, name) and open_dataset(db, group) read no array data: variables are dask
arrays (Array.to_dask) that load their blocks when computed. Only the dimension coordinates
(the index, usually small) are read at open, as xarray needs their values. to_bigarray(obj, db,
group) writes a Dataset or DataArray into a group in one transaction.
"""
import numpy as np
import xarray as xr

from ._attrs import decode, encode  # noqa: F401  (the value rules are the attributes')

DIMENSIONS = "_ARRAY_DIMENSIONS"


def _variable(array, base):
    attrs = dict(array.attrs)
    dims = attrs.pop(DIMENSIONS, None)
    if dims is None:  # not written by to_bigarray: dimensions of its own
        dims = [f"{base}_dim_{k}" for k in range(array.ndim)]
    if isinstance(dims, str):
        dims = [dims]
    if len(dims) != array.ndim:
        raise ValueError(f"array {array.name!r}: {DIMENSIONS} names {len(dims)} dimensions, "
                         f"but the array has {array.ndim}")
    return xr.Variable(tuple(dims), array.to_dask(), attrs=attrs)


def _group_variables(db, group, only=None):
    prefix = f"{group}/" if group else ""
    variables = {}
    for name, is_group in db._list(group):
        if is_group or (only is not None and name not in only):
            continue
        variables[name] = _variable(db[prefix + name], name)
    return variables


def _decode(ds, decode_cf):
    return xr.decode_cf(ds) if decode_cf else ds


def open_dataset(db, group="", *, decode_cf=True):
    """The arrays directly in `group` as a lazily loaded xarray.Dataset."""
    group = group.strip("/")
    variables = _group_variables(db, group)
    if not variables:
        raise KeyError(f"no arrays in group {group!r} of {db.path}")
    ds = xr.Dataset(variables, attrs=dict(db.group(group).attrs) if group else dict(db.attrs))
    return _decode(ds, decode_cf)


def open_dataarray(db, name, *, decode_cf=True):
    """Array `name` as a lazily loaded xarray.DataArray, with its coordinates from its group."""
    name = name.strip("/")
    group, _, base = name.rpartition("/")
    var = _variable(db[name], base)
    wanted = set(var.dims) | set(str(var.attrs.get("coordinates", "")).split())
    prefix = f"{group}/" if group else ""
    variables = {base: var}
    for other in wanted - {base}:
        if prefix + other in db:
            candidate = _variable(db[prefix + other], other)
            if set(candidate.dims) <= set(var.dims):
                variables[other] = candidate
    ds = _decode(xr.Dataset(variables), decode_cf)
    coords = [n for n in ds.variables if n != base]
    return ds.set_coords(coords)[base]


def to_bigarray(obj, db, group, *, mode="w-", commit=True, block_size=None):
    """Writes a Dataset (or a DataArray, as a one-variable Dataset) into `group` of `db`.

    Each variable and coordinate becomes an array of the group, with its attrs, CF-encoded as
    xarray does for files (datetimes as numbers with units), and "_ARRAY_DIMENSIONS"; the
    Dataset's attrs become the group's. Dask-backed variables are written chunk by chunk
    from dask's threads (dask.array.store), so they need not fit in memory. mode "w-" refuses
    a group that is not empty (an array or a sub-group below it, or attributes), "w" first drops
    everything below it and its attributes; the top level ("") takes "w-" only. With commit (the default) everything commits
    as one transaction, together with the handle's earlier uncommitted changes, and is
    aborted if anything fails. block_size: of the arrays created (default 2 MiB).
    """
    import dask.array as da

    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=obj.name if obj.name is not None else "__xarray_dataarray_variable__")
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"to_bigarray writes an xarray Dataset or DataArray, not {type(obj).__name__}")
    if mode not in ("w", "w-"):
        raise ValueError(f"mode must be 'w' or 'w-', not {mode!r}")
    group = group.strip("/")
    if mode == "w" and not group:
        raise ValueError("mode='w' would drop every array of the database: write to the top level with "
                         "mode='w-', or into a group")
    g = db.group(group)

    def write():
        if db._group_exists(group) or (group and len(g.attrs)):
            if mode == "w-":
                raise ValueError(f"group {group!r} of {db.path} is not empty (mode='w' replaces it)")
            db._drop_group(group)
        variables, attrs = xr.conventions.encode_dataset_coordinates(obj)
        variables, attrs = xr.conventions.cf_encoder(variables, attrs)
        for name, var in variables.items():
            if np.dtype(var.dtype).kind not in "biufc":
                raise TypeError(f"variable {name!r} has dtype {var.dtype}: bigarray stores bool, integer, "
                                "float and complex arrays (encode strings as numbers or attributes)")
            a = g.create(name, var.shape, var.dtype, block_size=block_size)
            if isinstance(var.data, da.Array) and var.ndim > 0:
                da.store(var.data.rechunk(a.chunks), a, lock=False)
            else:
                a[...] = np.asarray(var.values)
            for key, value in var.attrs.items():
                a.attrs[key] = value
            a.attrs[DIMENSIONS] = list(var.dims)
        target = g.attrs if group else db.attrs
        for key, value in attrs.items():
            target[key] = value

    if not commit:
        write()
        return
    with db.transaction():
        write()
