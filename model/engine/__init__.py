"""The OpenVINO engine: AdaptiveClick's per-click network compiled for the CPU (spec option ``engine=openvino``).

:func:`load_openvino_engine` exports the network once per checkpoint and input size (:mod:`.export`: MSDA as the
C++ custom op of ``ops/csrc/msda_openvino.cpp``), makes the IR of the spec's precision (:mod:`.recipes`), caches it
on disk (:mod:`.ir_cache`) and compiles it; the predictor calls the resulting :class:`OpenVINOEngine` where it
would run the torch network, with its zoom-in, flip averaging and image-token caching unchanged around it.

``openvino`` (and ``nncf`` for the int8 recipes) is an optional dependency, ``pip install '.[openvino]'``; this
package imports it only when an engine is built.
"""

from .load import load_openvino_engine
from .recipes import OPENVINO_PRECISIONS, EngineUnavailableError, openvino_support
from .runtime import OpenVINOEngine

__all__ = [
    "OPENVINO_PRECISIONS",
    "EngineUnavailableError",
    "OpenVINOEngine",
    "load_openvino_engine",
    "openvino_support",
]
