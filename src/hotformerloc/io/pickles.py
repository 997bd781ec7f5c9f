"""A restricted unpickler for the reference implementation's data pickles.

The public benchmarks ship their splits as Python pickles (spec 4.1-4.4). A plain
``pickle.load`` runs any callable the file names (``os.system``, ...), so this module only
rebuilds plain data:

* ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``str``, ``bytes``, ``bytearray``,
  ``int``, ``float``, ``complex``, ``bool``, ``None`` (most need no global at all);
* NumPy arrays and scalars, through checked stand-ins for the few reconstruction globals
  NumPy writes (``numpy.ndarray`` / ``numpy.dtype`` / ``_reconstruct`` / ``scalar`` /
  ``_frombuffer``, under both ``numpy.core`` (NumPy 1) and ``numpy._core`` (NumPy 2));
  object arrays hold only what this loader itself admitted;
* optionally, instances of *record classes* named by the caller (e.g. the reference's
  ``TrainingTuple``): they become inert :class:`PickledObject` values holding the
  constructor arguments and the state; the named class is never imported or called.

Any other global is refused with :class:`PickleError` naming the file and the global.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hotformerloc.errors import PathError

__all__ = ["PickleError", "PickledObject", "load_plain_pickle"]

_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = ("builtins", "__builtin__")
#: Largest array (elements) a pickle may ask for before any data is read.
_MAX_ELEMENTS = 1 << 31


class PickleError(PathError):
    """A pickle is unreadable, or names a global this loader refuses.

    The message is ``"<path>: <problem>"``; ``path`` and ``problem`` are attributes.
    """


class _Refused(Exception):
    """Internal: a stand-in rejected its arguments (converted to PickleError)."""


class PickledObject:
    """Inert stand-in for an instance of a caller-allowed record class.

    ``qualname`` (class attribute): ``"module.Class"`` as written in the pickle;
    ``args``: the constructor arguments the pickle gave (``()`` for plain classes);
    ``state``: what the pickle set as the instance state (usually the attribute dict), or
    ``None``. The original class is never imported.
    """

    qualname: ClassVar[str] = ""
    args: tuple[Any, ...]
    state: Any

    def __new__(cls, *args: Any) -> PickledObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def attributes(self) -> dict[str, Any]:
        """The instance attributes: the state dict (merged with the slot dict of a
        ``(dict, slots)`` state); empty when the state is not a mapping."""
        s = self.state
        if isinstance(s, tuple) and len(s) == 2:
            merged: dict[str, Any] = {}
            for part in s:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return dict(s) if isinstance(s, dict) else {}

    def __repr__(self) -> str:
        return f"PickledObject({self.qualname}, args={self.args!r}, state={self.state!r})"


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` as an argument of ``_reconstruct``; never callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("numpy.ndarray may only appear as an argument of _reconstruct")


_NDARRAY = _NdarrayToken()


class _ObjectToken:
    """Stands for ``object`` as the base argument of ``copyreg._reconstructor``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("object may only appear as an argument of copyreg._reconstructor")


_OBJECT = _ObjectToken()


def _reconstructor(cls: Any, base: Any, state: Any) -> PickledObject:
    """Protocol 0/1 instance creation, for allowed record classes only."""
    if not (isinstance(cls, type) and issubclass(cls, PickledObject)) or base is not _OBJECT:
        raise _Refused(f"copyreg._reconstructor of {cls!r}: only allowed record classes")
    if state is not None:
        raise _Refused("copyreg._reconstructor with a base state")
    return cls()


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise _Refused(f"array shape {shape!r} is not a tuple of non-negative ints")
    if int(np.prod(shape, dtype=np.float64)) > _MAX_ELEMENTS:
        raise _Refused(f"array shape {shape} is too large")
    return shape


def _dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(obj, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise _Refused(f"numpy.dtype({obj!r}, ...) is not a plain dtype code")
    try:
        return np.dtype(obj, align=align, copy=copy)
    except TypeError as e:
        raise _Refused(f"numpy.dtype({obj!r}): {e}") from None


def _as_dtype(code: Any) -> np.dtype:
    if isinstance(code, np.dtype):
        return code
    if isinstance(code, bytes | str):
        text = code.decode("latin1") if isinstance(code, bytes) else code
        return _dtype(text)
    raise _Refused(f"array dtype {code!r} is not a numpy dtype")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise _Refused(f"_reconstruct of {subtype!r}: only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, _check_shape(shape), _as_dtype(dtype))


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise _Refused(f"_frombuffer of a {type(buf).__name__}, expected bytes")
    dt = _as_dtype(dtype)
    if dt.hasobject:
        raise _Refused("_frombuffer with an object dtype")
    if order not in ("C", "F"):
        raise _Refused(f"_frombuffer order {order!r}")
    shp = _check_shape(shape)
    try:
        return np.frombuffer(bytes(buf), dtype=dt).reshape(shp, order=order).copy(order="K")
    except ValueError as e:
        raise _Refused(f"_frombuffer: {e}") from None


def _scalar(dtype: Any, data: Any = None) -> Any:
    dt = _as_dtype(dtype)
    if dt.hasobject:
        raise _Refused("numpy scalar of an object dtype")
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _Refused(f"numpy scalar {dt} needs {dt.itemsize} bytes of data")
    return np.frombuffer(data, dtype=dt, count=1)[0]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is only allowed for latin1-encoded bytes")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray | list | tuple):
        return bytes(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise _Refused(f"bytes{args!r}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _encode,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copy_reg", "_reconstructor"): _reconstructor,
    }
    for mod in _NUMPY_CORE:
        table[(mod, "_reconstruct")] = _reconstruct
        table[(mod, "scalar")] = _scalar
    for mod in _NUMPY_NUMERIC:
        table[(mod, "_frombuffer")] = _frombuffer
    for mod in _BUILTINS:
        table[(mod, "set")] = set
        table[(mod, "frozenset")] = frozenset
        table[(mod, "bytearray")] = bytearray
        table[(mod, "bytes")] = _bytes
        table[(mod, "complex")] = complex
        table[(mod, "object")] = _OBJECT
    return table


_ALLOWED = _allowed_globals()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, records: Collection[str]) -> None:
        super().__init__(file)
        self._records = frozenset(records)
        self._record_types: dict[str, type[PickledObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        qualname = f"{module}.{name}"
        if name in self._records or qualname in self._records:
            if qualname not in self._record_types:
                self._record_types[qualname] = type(name, (PickledObject,), {"qualname": qualname})
            return self._record_types[qualname]
        raise _Refused(f"refused global {qualname!r}: only plain data and numpy arrays are allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("persistent ids are not allowed")


def load_plain_pickle(path: str | os.PathLike[str], *, records: Collection[str] = ()) -> Any:
    """Load a pickle that holds only plain data and numpy arrays (see the module doc).

    Args:
        path: the pickle file.
        records: class names (``"TrainingTuple"``, any module) or qualified names
            (``"datasets.base_datasets.TrainingTuple"``) whose instances are read as inert
            :class:`PickledObject` values. Empty by default: every class is refused.

    Raises:
        PickleError: the file is missing or unreadable, is not a pickle, is truncated, or
            names a refused global (the message names the file and the global) or holds
            malformed numpy data.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PickleError(path, "file not found") from None
    except OSError as e:
        raise PickleError(path, f"cannot read file ({e.strerror or e})") from e
    if not data:
        raise PickleError(path, "file is empty (0 bytes)")
    try:
        return _Unpickler(io.BytesIO(data), records).load()
    except _Refused as e:
        raise PickleError(path, str(e)) from None
    except RecursionError:
        raise PickleError(path, "nesting too deep") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as e:
        # malformed opcodes, truncated data, stand-ins given wrong arguments
        raise PickleError(
            path, f"not a readable plain-data pickle ({type(e).__name__}: {e})"
        ) from e
    except (AttributeError, MemoryError, OverflowError) as e:
        raise PickleError(path, f"corrupt pickle ({type(e).__name__}: {e})") from e
