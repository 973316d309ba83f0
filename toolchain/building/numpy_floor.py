"""What the oldest device numpy offers of the names device-side code uses, kept as cited data.

JetPack 4.6 (Ubuntu 18.04, Python 3.6) ships python3-numpy 1.13.3, and its pip 9 cannot install a newer manylinux2014
wheel, so the bundle runtime and the kit must run on 1.13.3. Each name the device files call as ``np.NAME`` is listed
with where numpy/numpy@v1.13.3 defines it and the keywords it takes; keywords whose value is a string (a sort kind,
a meshgrid indexing) also list the values 1.13.3 accepts. ``tests/test_numpy_floor.py`` walks the device files and
fails on anything not here — ``np.argsort(..., kind="stable")`` (numpy ≥ 1.15) was the case that broke the runtime.
"""
from dataclasses import dataclass, field

NUMPY_FLOOR = "1.13.3"
_N = "numpy/numpy@v1.13.3:numpy/"


@dataclass(frozen=True)
class NumpyName:
    source: str
    keywords: frozenset[str] = frozenset()
    values: dict[str, frozenset[str]] = field(default_factory=dict)  # keyword → accepted string values
    any_keyword: bool = False  # takes **kwds (savez: arrays by name)


NAMES: dict[str, NumpyName] = {
    "argsort": NumpyName(f"{_N}core/fromnumeric.py:826", frozenset({"axis", "kind", "order"}),
                         # the C converter reads the first letter only: q, h, m (else "unrecognized kind of sort")
                         {"kind": frozenset({"quicksort", "heapsort", "mergesort"})}),
    "meshgrid": NumpyName(f"{_N}lib/function_base.py:4554", frozenset({"indexing", "sparse", "copy"}),
                          {"indexing": frozenset({"xy", "ij"})}),  # :4666-4668
    "arange": NumpyName(f"{_N}core/src/multiarray/multiarraymodule.c:2858", frozenset({"dtype"})),
    "asarray": NumpyName(f"{_N}core/numeric.py:463", frozenset({"dtype", "order"})),
    "ascontiguousarray": NumpyName(f"{_N}core/numeric.py:586", frozenset({"dtype"})),
    "concatenate": NumpyName(f"{_N}core/src/multiarray/multiarraymodule.c:2160", frozenset({"axis"})),
    "prod": NumpyName(f"{_N}core/fromnumeric.py:2408", frozenset({"axis", "dtype", "keepdims"})),
    "clip": NumpyName(f"{_N}core/fromnumeric.py:1673"),  # a_max None = no upper bound (calculation.c:904-909)
    "empty": NumpyName(f"{_N}add_newdocs.py:778", frozenset({"dtype", "order"})),
    "zeros": NumpyName(f"{_N}add_newdocs.py:899", frozenset({"dtype", "order"})),
    "full": NumpyName(f"{_N}core/numeric.py:258", frozenset({"dtype", "order"})),
    "tile": NumpyName(f"{_N}lib/shape_base.py:826"),
    "nonzero": NumpyName(f"{_N}core/fromnumeric.py:1487"),
    "percentile": NumpyName(f"{_N}lib/function_base.py:4163", frozenset({"axis", "interpolation", "keepdims"}),
                            {"interpolation": frozenset({"linear", "lower", "higher", "midpoint", "nearest"})}),
    "median": NumpyName(f"{_N}lib/function_base.py:4020", frozenset({"axis", "keepdims"})),
    "exp": NumpyName(f"{_N}core/code_generators/generate_umath.py:673"),
    "maximum": NumpyName(f"{_N}core/code_generators/generate_umath.py:477"),
    "minimum": NumpyName(f"{_N}core/code_generators/generate_umath.py:484"),
    "ctypeslib": NumpyName(f"{_N}ctypeslib.py:421"),  # as_array
    "__version__": NumpyName(f"{_N}__init__.py:134"),
    "dtype": NumpyName(f"{_N}add_newdocs.py:6040"),
    "ndarray": NumpyName(f"{_N}add_newdocs.py:2412"),
    "float32": NumpyName(f"{_N}core/numerictypes.py:301"),
    "float64": NumpyName(f"{_N}core/numerictypes.py:301"),
    "float16": NumpyName(f"{_N}core/numerictypes.py:301"),
    "int8": NumpyName(f"{_N}core/numerictypes.py:338"),
    "int32": NumpyName(f"{_N}core/numerictypes.py:338"),
    "int64": NumpyName(f"{_N}core/numerictypes.py:338"),
    "uint8": NumpyName(f"{_N}core/numerictypes.py:338"),
    "uint64": NumpyName(f"{_N}core/numerictypes.py:338"),
    "array": NumpyName(f"{_N}add_newdocs.py:672", frozenset({"dtype", "copy", "order", "subok", "ndmin"})),
    "savez": NumpyName(f"{_N}lib/npyio.py:515", any_keyword=True),  # savez(file, *args, **kwds)
}
