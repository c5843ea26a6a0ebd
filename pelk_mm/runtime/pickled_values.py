"""numpy values and mmengine ``HistoryBuffer`` states in a checkpoint,
rebuilt by pelk_mm's code from checked data.

A checkpoint names numpy's reconstructors (``numpy.core.multiarray.
_reconstruct``, ``scalar``, ``numpy.dtype``) and mmengine's ``HistoryBuffer``
with the arguments and states it chooses. Handing those to numpy lets a
crafted file forge a dtype (its flags, fields and offsets) and so choose
what memory numpy reads. The loader (:mod:`.safe_loading`) therefore maps
each of those names to a stand-in of this module, which only records what
the file gives and checks it: plain numeric dtypes (bool, ints, floats,
complex) in a byte order, arrays whose bytes are exactly their shape times
their item size, a ``HistoryBuffer`` with exactly its own attributes.
:func:`rebuild` then replaces the stand-ins in the loaded object by values
made here (``numpy.frombuffer`` of a copy, ``HistoryBuffer(...)``), and
numpy's unpickling code never runs with arguments from the file.
"""
import functools
import math
import pickle
import re
from typing import Any, Dict, List, Tuple

import numpy as np
from mmengine.logging import HistoryBuffer

#: Marks a refusal of this module in the loader's error (torch re-raises
#: unpickling errors with its own text around ours).
REFUSED = 'pelk_mm refused a value'

# numpy's type codes of plain numeric dtypes, as its pickles give them.
_NUMERIC_CODE = re.compile(r'(b1|[iu][1248]|f[248]|c(8|16))')
_BYTE_ORDERS = ('<', '>', '|', '=')


class RefusedValue(pickle.UnpicklingError):
    """A numpy value or HistoryBuffer state that is not plain data."""

    def __init__(self, what: str):
        super().__init__(f'{REFUSED}: {what}')


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RefusedValue(what)


class Pickled:
    """A value as the file gives it; :meth:`value` makes the real one."""

    def __setstate__(self, state: Any) -> None:
        raise RefusedValue(f'a state given to {type(self).__name__}')

    def value(self, rebuilt) -> Any:
        raise NotImplementedError


class PickledDType(Pickled):
    """``numpy.dtype(code, align, copy)`` and its state, checked."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True):
        _require(
            isinstance(code, str)
            and _NUMERIC_CODE.fullmatch(code) is not None,
            f'numpy dtype {code!r}: only plain numeric dtypes '
            '(bool, int, uint, float, complex) are rebuilt')
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment,
        # flags[, metadata]) of a dtype without structure.
        _require(
            isinstance(state, tuple) and len(state) in (8, 9) and state[0] == 3
            and state[1] in _BYTE_ORDERS and state[2:5] == (None, None, None)
            and state[5:8] == (-1, -1, 0) and state[8:] in ((), (None, )),
            'numpy dtype state: not that of a plain numeric dtype (it gives '
            'fields, offsets, a subarray or flags)')
        if state[1] in ('<', '>'):
            self.dtype = self.dtype.newbyteorder(state[1])

    def value(self, rebuilt) -> np.dtype:
        return self.dtype


class PickledArray(Pickled):
    """``numpy.ndarray`` from ``_reconstruct`` and its state, checked."""

    def __init__(self) -> None:
        self.array = None

    def __setstate__(self, state: Any) -> None:
        _require(
            isinstance(state, tuple) and len(state) == 5 and state[0] == 1,
            'numpy array state: not (1, shape, dtype, fortran, bytes)')
        _, shape, dtype, fortran, data = state
        _require(
            isinstance(shape, tuple)
            and all(type(n) is int and n >= 0 for n in shape),
            f'numpy array shape {shape!r}')
        _require(
            isinstance(dtype, PickledDType),
            'numpy array dtype: not a plain numeric dtype')
        _require(isinstance(fortran, bool), 'numpy array order flag')
        _require(
            isinstance(data, (bytes, bytearray))
            and len(data) == math.prod(shape) * dtype.dtype.itemsize,
            f'numpy array of shape {shape} and dtype {dtype.dtype}: its data '
            f'is not {math.prod(shape) * dtype.dtype.itemsize} bytes')
        self.array = np.frombuffer(
            bytearray(data), dtype=dtype.dtype).reshape(
                shape, order='F' if fortran else 'C')

    def value(self, rebuilt) -> np.ndarray:
        _require(self.array is not None, 'numpy array without data')
        return self.array


def reconstruct_array(cls: Any, shape: Any, typecode: Any) -> PickledArray:
    """Stands for ``numpy.core.multiarray._reconstruct``."""
    _require(cls is NDARRAY and shape == (0, ),
             'numpy _reconstruct of something other than an empty ndarray')
    return PickledArray()


class PickledScalar(Pickled):
    """``numpy.core.multiarray.scalar(dtype, bytes)``, checked."""

    def __init__(self, dtype: Any = None, data: Any = None):
        _require(
            isinstance(dtype, PickledDType),
            'numpy scalar dtype: not a plain numeric dtype')
        _require(
            isinstance(data, bytes) and len(data) == dtype.dtype.itemsize,
            f'numpy scalar of dtype {dtype.dtype}: its data is not '
            f'{dtype.dtype.itemsize} bytes')
        self.scalar = np.frombuffer(data, dtype=dtype.dtype)[0]

    def value(self, rebuilt) -> Any:
        return self.scalar


class NDArrayClass:
    """Stands for the class ``numpy.ndarray`` (``_reconstruct``'s first
    argument); it builds nothing."""


NDARRAY = NDArrayClass()

# HistoryBuffer's own statistics methods (its class registry also holds
# those registered since, filled as the first buffer is made).
_STATISTICS = ('min', 'max', 'current', 'mean')


class StatisticMethod:
    """``getattr(HistoryBuffer, name)`` for one of its statistics."""

    def __init__(self, name: str):
        self.name = name

    def __setstate__(self, state: Any) -> None:
        raise RefusedValue('a state given to a HistoryBuffer method')


def _shown(owner: Any) -> str:
    if owner is PickledHistoryBuffer:
        return 'HistoryBuffer'
    return repr(getattr(owner, '__name__', owner))


def history_buffer_method(owner: Any, name: Any) -> StatisticMethod:
    """Stands for ``getattr`` in a checkpoint: HistoryBuffer's statistics
    methods only, which its pickled state names."""
    _require(
        owner is PickledHistoryBuffer
        and (name in _STATISTICS or name in HistoryBuffer._statistics_methods),
        f'getattr({_shown(owner)}, {name!r}): only '
        f'the statistics methods of mmengine HistoryBuffer are allowed')
    return StatisticMethod(name)


class PickledHistoryBuffer(Pickled):
    """An mmengine ``HistoryBuffer``: its state must hold exactly its own
    attributes (two 1-D numeric histories, a maximum length and its
    statistics methods by their names)."""

    _REQUIRED = ('max_length', '_log_history', '_count_history')
    _OPTIONAL = ('statistics_methods', )

    def __setstate__(self, state: Any) -> None:
        _require(
            isinstance(state, dict) and set(self._REQUIRED) <= set(state) <=
            set(self._REQUIRED + self._OPTIONAL),
            f'HistoryBuffer state with the attributes '
            f'{sorted(state) if isinstance(state, dict) else state!r}: '
            f'expected {list(self._REQUIRED + self._OPTIONAL)}')
        length = state['max_length']
        _require(
            type(length) is int and length > 0,
            f'HistoryBuffer max_length {length!r}')
        for key in ('_log_history', '_count_history'):
            _require(
                isinstance(state[key], PickledArray),
                f'HistoryBuffer {key}: not a numeric array')
        methods = state.get('statistics_methods', {})
        _require(
            isinstance(methods, dict) and all(
                isinstance(method, StatisticMethod) and method.name == name
                for name, method in methods.items()),
            'HistoryBuffer statistics_methods: each name must map to the '
            'HistoryBuffer method of that name')
        self.state = state

    def value(self, rebuilt) -> HistoryBuffer:
        _require(hasattr(self, 'state'), 'HistoryBuffer without a state')
        histories = [
            rebuilt(self.state[key])
            for key in ('_log_history', '_count_history')
        ]
        _require(
            all(h.ndim == 1 for h in histories)
            and len(histories[0]) == len(histories[1]),
            'HistoryBuffer histories: not two 1-D arrays of one length')
        return HistoryBuffer(*histories, max_length=self.state['max_length'])


class DTypeClass(Pickled):
    """Stands for one of numpy's dtype classes (``numpy.dtypes.*DType``)."""

    def __init__(self, cls: type):
        self.cls = cls

    def value(self, rebuilt) -> type:
        return self.cls


@functools.lru_cache(maxsize=None)
def stand_ins() -> Tuple[Tuple[Any, str], ...]:
    """What the loader allows a checkpoint to name beside torch's own
    globals: each stand-in with the global name it stands for (numpy 2's and
    numpy 1.x's module names alike). Made once: every load passes them."""
    names: List[Tuple[Any, str]] = []
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        names += [(reconstruct_array, f'{module}._reconstruct'),
                  (PickledScalar, f'{module}.scalar')]
    names += [
        (NDARRAY, 'numpy.ndarray'),
        (PickledDType, 'numpy.dtype'),
        (PickledHistoryBuffer, 'mmengine.logging.history_buffer.'
         'HistoryBuffer'),
        (history_buffer_method, 'builtins.getattr'),
    ]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if name.endswith('DType') and isinstance(cls, type):
            names.append((DTypeClass(cls), f'numpy.dtypes.{name}'))
    # The stand-ins' own classes: torch's loader builds (BUILD) only
    # objects whose class it allows.
    names += [(cls, f'{__name__}.{cls.__name__}')
              for cls in (PickledArray, PickledScalar, PickledDType,
                          PickledHistoryBuffer, StatisticMethod)]
    return tuple(names)


def rebuild(loaded: Any) -> Any:
    """``loaded`` with every stand-in replaced by the value it stands for,
    made here; containers are rebuilt in place (lists, dicts) or anew
    (tuples, sets), and shared objects stay shared.

    Raises:
        RefusedValue: A stand-in whose state the file never gave, or one
            that is not plain data.
    """
    done: Dict[int, Any] = {}

    def rebuilt(obj: Any) -> Any:
        key = id(obj)
        if key in done:
            return done[key]
        if isinstance(obj, Pickled):
            done[key] = obj.value(rebuilt)
        elif isinstance(obj, StatisticMethod):
            raise RefusedValue(
                'a HistoryBuffer method outside a HistoryBuffer')
        elif isinstance(obj, list):
            done[key] = obj
            obj[:] = [rebuilt(item) for item in obj]
        elif isinstance(obj, dict):
            done[key] = obj
            items = [(rebuilt(k), rebuilt(v)) for k, v in obj.items()]
            if any(
                    k is not key or v is not value
                    for (k, v), (key, value) in zip(items, obj.items())):
                obj.clear()
                for k, v in items:  # as each dict type sets an item
                    obj[k] = v
        elif type(obj) is tuple:  # not torch.Size and the like
            done[key] = tuple(rebuilt(item) for item in obj)
        elif type(obj) in (set, frozenset):
            done[key] = type(obj)(rebuilt(item) for item in obj)
        else:
            done[key] = obj
            attributes = getattr(obj, '__dict__', None)
            if attributes:  # a tensor's Python attributes
                for name, value in list(attributes.items()):
                    attributes[name] = rebuilt(value)
        return done[key]

    try:
        return rebuilt(loaded)
    except RecursionError:
        raise RefusedValue('values nested too deeply') from None
