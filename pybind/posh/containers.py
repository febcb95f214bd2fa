# SPDX-License-Identifier: MIT
"""This file contains posh.dict and posh.list: a dict and a list shared by
every process of the heap, over libposh's dict and list objects (the hot
paths are C slots of posh._posh.DictBase / ListBase; the rest of the
mapping / sequence protocol is here).

Keys and values are any Python values, encoded with the posh codec.  Dict
keys use its canonical key form: keys that compare equal as numbers
(True == 1 == 1.0 == 1+0j) are the same key and come back as the int; other
types are matched by their pickle.  Single operations are atomic (one C
call); sort, reverse, remove, index and the comparisons work on a snapshot
(see docs/python.md).  Objects pickle as a handle and can be passed to
Process / ProcessPoolExecutor under every start method.
"""
import builtins
import collections.abc as _abc
import operator as _operator

from . import _posh
from ._posh import DictBase, ListBase

__all__ = ["SharedDict", "SharedList"]

_MISSING = object()
_dict = builtins.dict
_list = builtins.list


def _rebuild(cls, ref, handle):
    _posh.heap_attach(*handle)
    obj = cls.__new__(cls)
    obj._open(*ref)
    return obj


class SharedDict(DictBase):
    """posh.dict(mapping_or_iterable=(), **kwargs): a shared dict, in
    insertion order (as dict)."""
    __slots__ = ()

    def __init__(self, /, *args, **kwargs):
        if len(args) > 1:
            raise TypeError("dict expected at most 1 argument, got %d"
                            % len(args))
        self._create()
        if args or kwargs:
            self.update(*args, **kwargs)

    def __reduce__(self):
        return (_rebuild, (type(self), self._ref(), _posh.heap_handle()))

    def __iter__(self):
        return iter(self._items(0))

    def __reversed__(self):
        return reversed(self._items(0))

    def keys(self):
        """A list of the keys (a snapshot)."""
        return self._items(0)

    def values(self):
        """A list of the values (a snapshot)."""
        return self._items(1)

    def items(self):
        """A list of the (key, value) pairs (a snapshot)."""
        return self._items(2)

    def pop(self, key, default=_MISSING):
        try:
            return self._pop(key)
        except KeyError:
            if default is _MISSING:
                raise
            return default

    def update(self, other=(), /, **kwargs):
        if isinstance(other, (SharedDict, _dict)):
            for k, v in other.items():  # one snapshot of a SharedDict
                self[k] = v
        elif hasattr(other, "keys"):
            for k in other.keys():
                self[k] = other[k]
        else:
            for k, v in other:
                self[k] = v
        for k, v in kwargs.items():
            self[k] = v

    def copy(self):
        """A plain dict with the items (a snapshot)."""
        return _dict(self._items(2))

    @classmethod
    def fromkeys(cls, iterable, value=None, /):
        d = cls()
        for k in iterable:
            d[k] = value
        return d

    def __eq__(self, other):
        if isinstance(other, (SharedDict, _abc.Mapping)):
            return self.copy() == _dict(other.items())
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __or__(self, other):
        if not isinstance(other, _abc.Mapping):
            return NotImplemented
        d = self.copy()
        d.update(other)
        return d

    def __ror__(self, other):
        if not isinstance(other, _abc.Mapping):
            return NotImplemented
        d = _dict(other)
        d.update(self.copy())
        return d

    def __ior__(self, other):
        self.update(other)
        return self

    def __repr__(self):
        return repr(self.copy())


_abc.MutableMapping.register(SharedDict)


def _plain(other):
    if isinstance(other, SharedList):
        return other._snapshot()
    if isinstance(other, _list):
        return other
    return None


class SharedList(ListBase):
    """posh.list(iterable=()): a shared list."""
    __slots__ = ()

    def __init__(self, iterable=(), /):
        self._create()
        self.extend(iterable)  # any iterable (no truth test: numpy arrays)

    def __reduce__(self):
        return (_rebuild, (type(self), self._ref(), _posh.heap_handle()))

    def get(self, index, copy=False):
        """self[index]; copy: private copies of big buffers."""
        return self._get(index, copy)

    def copy(self):
        """A plain list with the items (a snapshot)."""
        return self._snapshot()

    def __iter__(self):
        return iter(self._snapshot())

    def __reversed__(self):
        return reversed(self._snapshot())

    def __contains__(self, x):
        return x in self._snapshot()

    def index(self, x, start=0, stop=None):
        snap = self._snapshot()
        if stop is None:
            return snap.index(x, start)
        return snap.index(x, start, stop)

    def count(self, x):
        return self._snapshot().count(x)

    def remove(self, x):
        """Remove the first item equal to x: found in a snapshot, removed
        by index (if the list changed meanwhile, an item at that index
        equal to x is removed; else the search starts again)."""
        while True:
            try:
                i = self._snapshot().index(x)
            except ValueError:
                raise ValueError("list.remove(x): x not in list") from None
            try:
                if self[i] == x:
                    del self[i]
                    return
            except IndexError:
                pass

    def reverse(self):
        """Reverse in place: a snapshot written back with one slice
        assignment (not atomic against concurrent writers)."""
        raw = self._raw()
        raw.reverse()
        self._set_raw(0, len(raw), raw)

    def sort(self, *, key=None, reverse=False):
        """Sort in place: a snapshot sorted here and written back with one
        slice assignment (not atomic against concurrent writers)."""
        raw = self._raw()
        vals = [_posh.loads(r, consume=False) for r in raw]
        keys = vals if key is None else [key(v) for v in vals]
        order = sorted(range(len(raw)), key=keys.__getitem__,
                       reverse=reverse)
        self._set_raw(0, len(raw), [raw[i] for i in order])

    def __iadd__(self, other):
        self.extend(other)
        return self

    def __imul__(self, n):
        try:
            n = _operator.index(n)
        except TypeError:
            return NotImplemented
        if n <= 0:
            self.clear()
        else:
            snap = self._snapshot()
            self.extend(snap * (n - 1))
        return self

    def __add__(self, other):
        o = _plain(other)
        if o is None:
            return NotImplemented
        return self._snapshot() + o

    def __radd__(self, other):
        o = _plain(other)
        if o is None:
            return NotImplemented
        return o + self._snapshot()

    def __mul__(self, n):
        try:
            n = _operator.index(n)
        except TypeError:
            return NotImplemented
        return self._snapshot() * n

    __rmul__ = __mul__

    def _cmp(self, other, op):
        o = _plain(other)
        if o is None:
            return NotImplemented
        return op(self._snapshot(), o)

    def __eq__(self, other):
        return self._cmp(other, _list.__eq__)

    def __ne__(self, other):
        return self._cmp(other, _list.__ne__)

    def __lt__(self, other):
        return self._cmp(other, _list.__lt__)

    def __le__(self, other):
        return self._cmp(other, _list.__le__)

    def __gt__(self, other):
        return self._cmp(other, _list.__gt__)

    def __ge__(self, other):
        return self._cmp(other, _list.__ge__)

    __hash__ = None

    def __repr__(self):
        return repr(self._snapshot())


_abc.MutableSequence.register(SharedList)
