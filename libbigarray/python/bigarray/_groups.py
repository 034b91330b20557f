"""Groups (docs/python.md, "Groups"): names with '/' form a hierarchy, as in HDF5 and zarr.

db.group("runs") is a view of the names below "runs/": nothing is stored for a group but its
attributes, and a group exists while a name lies below it. Listing one level reads the catalog's
names at that level only: it skips over each sub-group's, whatever else the database holds.
"""
from ._attrs import AttributeManager


def _clean(name, what="group name"):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    return name.strip("/")


class Group:
    """A view of the arrays and sub-groups below a group of a Database.

    g.create(name, shape, dtype, ...) creates the array group/name; g[name] is the array
    group/name, or else the sub-group of that name (KeyError if neither exists); name in g;
    iter(g), len(g), g.keys(): the names one level below (arrays and sub-groups, sorted);
    g.group(name): a sub-group's view (which need not exist yet); del g[name]: the array
    and/or the sub-group with everything below it; g.names(): every array below, by its name
    relative to the group; g.attrs: the group's attributes. All transactional.
    """

    __slots__ = ("_db", "_name")

    def __init__(self, db, name=""):
        self._db = db
        self._name = _clean(name)

    @property
    def name(self):
        """The group's name, without leading or trailing '/' ("" for the top level)."""
        return self._name

    @property
    def database(self):
        return self._db

    def _full(self, name):
        name = _clean(name, "name")
        if not name:
            raise ValueError("an empty name")
        return f"{self._name}/{name}" if self._name else name

    def _entries(self):
        return self._db._list(self._name)

    def create(self, name, shape, dtype, order="C", block_size=None):
        return self._db.create(self._full(name), shape, dtype, order=order, block_size=block_size)

    def group(self, name):
        return Group(self._db, self._full(name))

    def __getitem__(self, name):
        full = self._full(name)
        if full in self._db:
            return self._db[full]
        if self._db._group_exists(full):
            return Group(self._db, full)
        raise KeyError(f"no array or group named {name!r} in {self!r}")

    def __contains__(self, name):
        if not isinstance(name, str) or not name.strip("/"):
            return False
        full = self._full(name)
        return full in self._db or self._db._group_exists(full)

    def __delitem__(self, name):
        full = self._full(name)
        found = False
        if full in self._db:
            del self._db[full]
            found = True
        try:
            self._db._drop_group(full)
            found = True
        except KeyError:
            pass
        if not found:
            raise KeyError(f"no array or group named {name!r} in {self!r}")

    def keys(self):
        """The names one level below, sorted; a name that is both an array and a group once."""
        out = []
        for name, _ in self._entries():
            if not out or out[-1] != name:
                out.append(name)
        return out

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def arrays(self):
        """[(name, Array)] of the arrays one level below."""
        return [(n, self._db[self._full(n)]) for n, is_group in self._entries() if not is_group]

    def groups(self):
        """[(name, Group)] of the sub-groups one level below."""
        return [(n, Group(self._db, self._full(n))) for n, is_group in self._entries() if is_group]

    def names(self):
        """Every array below the group, by its name relative to the group, sorted."""
        prefix = self._name + "/" if self._name else ""
        return [n[len(prefix):] for n in self._db.names(prefix)]

    @property
    def attrs(self):
        return AttributeManager(self._db._attrs_handle(self._name))

    def __eq__(self, other):
        return isinstance(other, Group) and other._db is self._db and other._name == self._name

    __hash__ = None

    def __repr__(self):
        return f"<bigarray.Group {('/' + self._name)!r} of {self._db.path!r}>"
