# SPDX-License-Identifier: MIT
"""posh's shared scalars and arrays: drop-ins for multiprocessing's Value,
Array, RawValue and RawArray, over libposh's Value/Array objects.

Type codes are those of the array module ('c', 'b', 'B', 'h', 'H', 'i',
'I', 'l', 'L', 'q', 'Q', 'f', 'd'); the matching ctypes types are accepted
too.  Value and Array carry a recursive lock (get_lock()); the Raw forms do
not.  Every object exports its data through the buffer protocol, so
numpy.frombuffer(arr) (or arr.get_obj()) is a zero-copy view of shared
memory.  Objects pickle as a reference (offset + unique id) and are freed
when the last process holding one closes it or dies.
"""
import ctypes
import operator

from . import _posh
from ._posh import ObjBase

__all__ = ["Value", "RawValue", "Array", "RawArray"]

_CTYPES = {}
for _code, _name in (("c", "c_char"), ("b", "c_byte"), ("B", "c_ubyte"),
                     ("h", "c_short"), ("H", "c_ushort"), ("i", "c_int"),
                     ("I", "c_uint"), ("l", "c_long"), ("L", "c_ulong"),
                     ("q", "c_longlong"), ("Q", "c_ulonglong"),
                     ("f", "c_float"), ("d", "c_double")):
    _CTYPES.setdefault(getattr(ctypes, _name), _code)
_CNAMES = {"c": "c_char", "b": "c_byte", "B": "c_ubyte", "h": "c_short",
           "H": "c_ushort", "i": "c_int", "I": "c_uint", "l": "c_long",
           "L": "c_ulong", "q": "c_longlong", "Q": "c_ulonglong",
           "f": "c_float", "d": "c_double"}


def _typecode(typecode_or_type):
    if isinstance(typecode_or_type, str):
        return typecode_or_type
    try:
        return _CTYPES[typecode_or_type]
    except (KeyError, TypeError):
        raise TypeError("posh supports the type codes %s and their ctypes "
                        "types, not %r" % ("".join(_CNAMES),
                                           typecode_or_type)) from None


def _index(i):
    """An item index: int or any __index__ object (numpy integers), as
    ctypes arrays; TypeError otherwise."""
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError("indices must be integers, not %s"
                        % type(i).__name__) from None


def _rebuild(cls, ref, handle, ext_lock):
    _posh.heap_attach(*handle)
    obj = cls.__new__(cls)
    obj._open(*ref)
    obj._ext_lock = ext_lock
    return obj


class _ObjLock:
    """The recursive lock of a Value or Array (what get_lock() returns)."""
    __slots__ = ("_obj",)

    def __init__(self, obj):
        self._obj = obj

    def acquire(self, block=True, timeout=None):
        return self._obj._lock_acquire(block, timeout)

    def release(self):
        self._obj._lock_release()

    def __enter__(self):
        return self._obj._lock_acquire()

    def __exit__(self, *args):
        self._obj._lock_release()

    def __reduce__(self):
        return (_ObjLock, (self._obj,))

    def __repr__(self):
        return "<posh lock of %r (held %d)>" % (self._obj,
                                                self._obj._lock_owned())


class _Shared(ObjBase):
    __slots__ = ("_ext_lock", "_own_lock", "__weakref__")

    def _init(self, kind, typecode_or_type, length, lock):
        tc = _typecode(typecode_or_type)
        self._ext_lock = None
        if lock is True or lock is None:
            with_lock = True
        elif lock is False:
            with_lock = False
        elif hasattr(lock, "acquire"):
            with_lock = False   # the given lock protects it
            self._ext_lock = lock
        else:  # as multiprocessing
            raise AttributeError("%r has no method 'acquire'" % (lock,))
        self._create(kind, tc, length, with_lock)

    def __reduce__(self):
        return (_rebuild, (type(self), self._ref(), _posh.heap_handle(),
                           self._ext_lock))


class _Synchronized:
    """What a Value or Array with a lock adds (multiprocessing's
    Synchronized wrappers): get_lock, get_obj and the lock's methods.  The
    raw forms (RawValue, RawArray, lock=False) have none of them, as
    multiprocessing's raw ctypes objects."""
    __slots__ = ()

    def get_lock(self):
        if self._ext_lock is not None:
            return self._ext_lock
        try:
            return self._own_lock
        except AttributeError:
            pass
        if not self._has_lock():
            raise AttributeError("%s has no lock" % type(self).__name__)
        self._own_lock = _ObjLock(self)
        return self._own_lock

    def get_obj(self):
        return self

    def acquire(self, block=True, timeout=None):
        return self.get_lock().acquire(block, timeout)

    def release(self):
        self.get_lock().release()

    def __enter__(self):
        return self.get_lock().__enter__()

    def __exit__(self, *args):
        return self.get_lock().__exit__(*args)


class RawValue(_Shared):
    """A shared scalar without a lock (multiprocessing.RawValue)."""
    __slots__ = ()

    def __init__(self, typecode_or_type, *args):
        self._init_value(typecode_or_type, args, False)

    def _init_value(self, typecode_or_type, args, lock):
        self._init(_posh.OBJ_VALUE, typecode_or_type, 1, lock)
        if args:
            self._set(args[0])

    @property
    def value(self):
        if self._ext_lock is not None:
            with self._ext_lock:
                return self._get()
        return self._get()

    @value.setter
    def value(self, v):
        if self._ext_lock is not None:
            with self._ext_lock:
                return self._set(v)
        self._set(v)

    def __repr__(self):
        return "<%s %s(%r)>" % (type(self).__name__,
                                _CNAMES.get(self._typecode, "?"), self.value)


class Value(_Synchronized, RawValue):
    """A shared scalar (multiprocessing.Value): Value(typecode_or_type,
    *args, lock=True).  lock: True (its own recursive lock), False (none:
    a RawValue is returned, as multiprocessing returns the raw object) or
    a Lock/RLock to use."""
    __slots__ = ()

    def __new__(cls, typecode_or_type=None, *args, lock=True, ctx=None):
        if lock is False and cls is Value:
            # not a Value, so Python will not call __init__: done here
            raw = RawValue.__new__(RawValue)
            raw._init_value(typecode_or_type, args, False)
            return raw
        return super().__new__(cls)

    def __init__(self, typecode_or_type, *args, lock=True, ctx=None):
        self._init_value(typecode_or_type, args, lock)


class RawArray(_Shared):
    """A shared array without a lock (multiprocessing.RawArray)."""
    __slots__ = ()

    def __init__(self, typecode_or_type, size_or_initializer):
        self._init_array(typecode_or_type, size_or_initializer, False)

    def _init_array(self, typecode_or_type, size_or_initializer, lock):
        try:
            # a size: int or any __index__ object (numpy integers)
            n, init = operator.index(size_or_initializer), None
        except TypeError:
            init = list(size_or_initializer)
            n = len(init)
        self._init(_posh.OBJ_ARRAY, typecode_or_type, n, lock)
        if init:
            for i, v in enumerate(init):
                self._setitem(i, v)

    def _locked(self):
        if self._ext_lock is not None:
            return self._ext_lock
        try:
            return self._own_lock
        except AttributeError:
            pass
        return self.get_lock() if self._has_lock() else _NOLOCK

    def __getitem__(self, i):
        n = len(self)
        with self._locked():
            if isinstance(i, slice):
                items = [self._getitem(j) for j in range(*i.indices(n))]
                return b"".join(items) if self._typecode == "c" else items
            i = _index(i)
            if i < 0:
                i += n
            return self._getitem(i)

    def __setitem__(self, i, v):
        n = len(self)
        with self._locked():
            if isinstance(i, slice):
                idx = range(*i.indices(n))
                if self._typecode == "c" and isinstance(v, (bytes, bytearray)):
                    v = list(v)
                v = list(v)
                if len(v) != len(idx):
                    raise ValueError("Can only assign sequence of same size")
                for j, x in zip(idx, v):
                    self._setitem(j, x)
                return
            i = _index(i)
            if i < 0:
                i += n
            self._setitem(i, v)

    def __iter__(self):
        return iter(self[:])

    def __repr__(self):
        return "<%s %s[%d]>" % (type(self).__name__,
                                _CNAMES.get(self._typecode, "?"), len(self))

    # char arrays, as ctypes' c_char arrays
    @property
    def value(self):
        raw = self.raw
        z = raw.find(b"\0")
        return raw if z < 0 else raw[:z]

    @value.setter
    def value(self, v):
        if len(v) > len(self):
            raise ValueError("byte string too long")
        # as ctypes: the bytes and a terminating NUL if there is room
        self.raw = bytes(v) + b"\0" if len(v) < len(self) else bytes(v)

    @property
    def raw(self):
        if self._typecode != "c":
            raise AttributeError("raw: only for 'c' arrays")
        with self._locked():
            return memoryview(self).tobytes()

    @raw.setter
    def raw(self, v):
        if self._typecode != "c":
            raise AttributeError("raw: only for 'c' arrays")
        if len(v) > len(self):
            raise ValueError("byte string too long")
        with self._locked():
            memoryview(self).cast("B")[:len(v)] = v


class Array(_Synchronized, RawArray):
    """A shared fixed-length array (multiprocessing.Array):
    Array(typecode_or_type, size_or_initializer, *, lock=True); lock=False
    returns a RawArray, as multiprocessing returns the raw object."""
    __slots__ = ()

    def __new__(cls, typecode_or_type=None, size_or_initializer=None, *,
                lock=True, ctx=None):
        if lock is False and cls is Array:
            # not an Array, so Python will not call __init__: done here
            raw = RawArray.__new__(RawArray)
            raw._init_array(typecode_or_type, size_or_initializer, False)
            return raw
        return super().__new__(cls)

    def __init__(self, typecode_or_type, size_or_initializer, *, lock=True,
                 ctx=None):
        self._init_array(typecode_or_type, size_or_initializer, lock)


class _NoLock:
    def __enter__(self):
        return True

    def __exit__(self, *args):
        pass


_NOLOCK = _NoLock()
