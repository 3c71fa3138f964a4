"""Build the OpenVINO engine of a network: the IR from the on-disk cache (else export, compress or quantise it
once), compiled for this CPU (the plugin's blob cache makes a second compile quick)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import ir_cache
from .export import export_network
from .recipes import (
    RECIPES,
    EngineUnavailableError,
    compile_config,
    compress_weights,
    import_openvino,
    openvino_support,
)
from .runtime import OpenVINOEngine

if TYPE_CHECKING:
    from ..adaptiveclick import AdaptiveClick

log = logging.getLogger(__name__)

#: network inputs of real clicks for ``int8-static``: ``(image_tokens [1, N, D], maps [1, 3, H, W])`` pairs
CalibrationInputs = Callable[[], Sequence[tuple[torch.Tensor, torch.Tensor]]]

_lock = threading.Lock()
_core: Any = None
_extension_state: dict[str, Any] = {}  # "path": Path | None, "reason": why not (warned about once)


def msda_extension() -> Path | None:
    """The MSDA custom op library (built on first use), or None with one warning when it cannot be built: the
    engine then exports MSDA as grid_sample (slower, same results)."""
    if "path" in _extension_state:
        return _extension_state["path"]
    from adaptiveclick.ops.build import BuildError
    from adaptiveclick.ops.openvino_build import library

    try:
        path: Path | None = library()
    except BuildError as exc:
        path = None
        log.warning(
            "OpenVINO engine: the MSDA custom op is unavailable, exporting MSDA as grid_sample instead (about "
            "10x slower per encoder layer; `python -m adaptiveclick.ops.build --openvino yes` shows the build "
            "log): %s",
            str(exc)[-1500:],
        )
    _extension_state["path"] = path
    return path


def core(extension: Path | None):
    """The process's ``openvino.Core`` with the MSDA op registered (it must be before an IR holding it is read)."""
    global _core
    ov = import_openvino()
    with _lock:
        if _core is None:
            _core = ov.Core()
        if extension is not None and str(extension) not in _extension_state.setdefault("added", set()):
            _core.add_extension(str(extension))
            _extension_state["added"].add(str(extension))
    return _core


def base_key_parts(net: AdaptiveClick, input_size: int, extension: Path | None) -> dict[str, Any]:
    import openvino

    from adaptiveclick.ops.openvino_build import build_key

    return {
        "openvino": openvino.__version__,
        "torch": torch.__version__,
        "msda": build_key() if extension is not None else "grid_sample",
        "network": getattr(getattr(net, "config", None), "name", type(net).__name__),
        "input_size": input_size,
        "batch": 1,
    }


def _exported_ir(net, weights_key: str, parts: dict, extension: Path | None, facts: dict) -> Path:
    folder = ir_cache.ir_folder(weights_key, ir_cache.engine_key({**parts, "ir": "export"}))
    xml = ir_cache.cached_ir(folder)
    if xml is not None:
        return xml
    import openvino as ov

    def save(tmp: Path) -> dict:
        start = time.perf_counter()
        model, info = export_network(net, parts["input_size"], extension)
        facts["export_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ov.save_model(model, tmp / ir_cache.IR_FILE, compress_to_fp16=False)
        facts["save_s"] = time.perf_counter() - start
        return {**parts, **info, "ir": "export", "export_s": facts["export_s"]}

    facts["exported"] = True
    return ir_cache.write_ir(folder, save)


def _derived_ir(ov_core, source: Path, folder: Path, parts: dict, transform: Callable, facts: dict) -> Path:
    """An IR made from the exported one (weight compression, static quantisation), cached like it."""
    xml = ir_cache.cached_ir(folder)
    if xml is not None:
        return xml
    import nncf
    import openvino as ov

    def save(tmp: Path) -> dict:
        start = time.perf_counter()
        model = transform(ov_core.read_model(str(source)))
        facts["transform_s"] = time.perf_counter() - start
        ov.save_model(model, tmp / ir_cache.IR_FILE, compress_to_fp16=False)
        return {**parts, "nncf": nncf.__version__, "transform_s": facts["transform_s"]}

    facts["transformed"] = True
    return ir_cache.write_ir(folder, save)


def load_openvino_engine(
    net: AdaptiveClick,
    weights_key: str,
    precision: str = "fp32",
    threads: int | None = None,
    input_size: int = 448,
    calibration: CalibrationInputs | None = None,
    calibration_recipe: dict[str, Any] | None = None,
) -> OpenVINOEngine:
    """The compiled engine of ``net`` (float32, eval mode) at ``precision``.

    Args:
        weights_key: names the weights in the cache (the checkpoint's sha256, or :func:`ir_cache.state_dict_key`).
        threads: the plugin's ``INFERENCE_NUM_THREADS`` (default: its choice, one per core).
        calibration: for ``int8-static`` without a cached IR: returns the network inputs of real clicks.
        calibration_recipe: what ``calibration`` returns (dataset, images, clicks): part of the cache key.

    Raises :class:`EngineUnavailableError` (openvino missing, the precision not native here, ``int8-static``
    neither cached nor given calibration inputs).
    """
    start = time.perf_counter()
    import_openvino()
    reason = openvino_support(precision)
    if reason:
        raise EngineUnavailableError(f"engine=openvino,precision={precision} is not available: {reason}")
    recipe = RECIPES[precision]
    extension = msda_extension()
    facts: dict[str, Any] = {
        "exported": False,
        "transformed": False,
        "msda": "custom-op" if extension else "grid_sample",
    }
    parts = base_key_parts(net, input_size, extension)
    ov_core = core(extension)
    xml = _exported_ir(net, weights_key, parts, extension, facts)
    if recipe.ir == "int8-weights":
        ir_parts = {**parts, **recipe.ir_parts()}
        folder = ir_cache.ir_folder(weights_key, ir_cache.engine_key(ir_parts))
        xml = _derived_ir(ov_core, xml, folder, ir_parts, compress_weights, facts)
    elif recipe.ir == "int8-static":
        from .calibration import quantize_static

        ir_parts = {**parts, **recipe.ir_parts(), "calibration": calibration_recipe or {}}
        folder = ir_cache.ir_folder(weights_key, ir_cache.engine_key(ir_parts))
        if ir_cache.cached_ir(folder) is None and calibration is None:
            raise EngineUnavailableError(
                "engine=openvino,precision=int8-static has no calibrated model for these weights yet: prepare it "
                "once with `adaptiveclick benchmark openvino-prepare --source SPEC` (NoC clicks on GrabCut)"
            )
        xml = _derived_ir(ov_core, xml, folder, ir_parts, lambda model: quantize_static(model, calibration()), facts)
    start_compile = time.perf_counter()
    model = ov_core.read_model(str(xml))
    config = compile_config(recipe, threads)
    # one blob folder per compile config: the CPU plugin's blob key ignores INFERENCE_PRECISION_HINT (openvino
    # 2026.4.1), and a bf16 model imported from an f32 blob computes wrong logits (measured: 20% off, not even
    # the same from one process to the next)
    blobs = ir_cache.checked_blobs(xml.parent / ir_cache.COMPILED_DIR / ir_cache.engine_key(config))
    config["CACHE_DIR"] = str(blobs)
    compiled = ov_core.compile_model(model, "CPU", config)
    ir_cache.record_blobs(blobs)
    facts["compile_s"] = time.perf_counter() - start_compile
    facts["load_s"] = time.perf_counter() - start
    facts["ir"] = str(xml)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    facts["inference_precision"] = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    facts["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    log.info("OpenVINO engine %s: %s", precision, {k: v for k, v in facts.items() if k != "ir"})
    return OpenVINOEngine(compiled, precision, facts)
