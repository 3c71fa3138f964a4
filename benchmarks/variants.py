"""The CPU variants the benchmarks compare: a variant is predictor options (``precision=int8``,
``engine=openvino,precision=fp32``) added to a source spec; torch fp32 eager is the baseline every ratio is taken
against. Shared by ``benchmark cpu``, ``benchmark cpu-parity`` and ``benchmark openvino-prepare``.
"""

from __future__ import annotations

from adaptiveclick.model.fast import variant_support
from adaptiveclick.model.fast.optimize import CPU_VARIANTS
from adaptiveclick.model.spec import parse_options, parse_spec

BASELINE_VARIANT = "precision=fp32"
# every CPU variant the default can choose from, the baseline first; int8-static needs its calibrated IR prepared
DEFAULT_VARIANTS = [BASELINE_VARIANT] + [
    f"precision={p}" if engine == "torch" else f"engine={engine},precision={p}"
    for engine, p in reversed(CPU_VARIANTS)
    if (engine, p) != ("torch", "fp32") and p != "int8-static"
]


def variant_spec(source: str, variant: str) -> str:
    """``random:base`` + ``precision=int8,threads=2`` -> ``random:base#precision=int8,threads=2`` (the source's own
    options are kept; the variant's win)."""
    return str(parse_spec(source).with_options(**parse_options(variant)))


def variant_of(spec: str) -> tuple[str, str] | None:
    """``(engine, precision)`` a spec names (either defaulted), None when it names neither."""
    parsed = parse_spec(spec)
    engine, precision = parsed.option("engine"), parsed.option("precision")
    if not (engine or precision):
        return None
    return engine or "torch", precision or "fp32"


def is_engine(spec: str) -> bool:
    return (variant_of(spec) or ("torch", ""))[0] == "openvino"


def is_baseline(spec: str) -> bool:
    return variant_of(spec) == ("torch", "fp32")


def unavailable_reason(spec: str) -> str | None:
    """Why a variant cannot run on this machine (an instruction set, openvino, a torch feature it needs), else None."""
    variant = variant_of(spec)
    return None if variant is None else variant_support(*variant, "cpu")
