"""Prepare OpenVINO engines ahead of time: export, compress or calibrate, and compile each variant once, so that
the service's first start only reads them from the cache (``$ADAPTIVECLICK_CACHE/openvino``).

``precision=int8-static`` is calibrated here, and only here or in the CPU benchmarks: the calibration inputs are the
network inputs of the NoC clicker's clicks on the shipped GrabCut images (the clicker and the datasets live above
the model's floor, so ``load_predictor`` alone cannot make them; it names this command when the calibrated model is
missing)::

    adaptiveclick benchmark openvino-prepare --source weights/adaptiveclick_base448_sbd.pth \\
        --variants "engine=openvino,precision=fp32;engine=openvino,precision=int8-static"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from adaptiveclick.evaluation import open_dataset, simulate
from adaptiveclick.model.engine.calibration import CALIBRATION_RECIPE, record_network_inputs
from adaptiveclick.model.loading import load_predictor

from .common import default_datasets_root
from .variants import variant_spec


def noc_calibration(data_root: Path | None) -> Callable:
    """``predictor -> network inputs``: the torch predictor answers the NoC clicker on the first
    ``CALIBRATION_RECIPE["images"]`` GrabCut images, ``CALIBRATION_RECIPE["clicks"]`` clicks each."""

    def calibrate(predictor) -> list:
        dataset = open_dataset(CALIBRATION_RECIPE["dataset"], data_root or default_datasets_root())
        start = time.perf_counter()
        with record_network_inputs(predictor.net) as records:
            for i in range(min(CALIBRATION_RECIPE["images"], len(dataset))):
                for _ in simulate(predictor, dataset[i], CALIBRATION_RECIPE["clicks"]):
                    pass
        print(f"int8-static calibration: {len(records)} network inputs in {time.perf_counter() - start:.0f} s")
        return records

    return calibrate


def add_arguments(parser) -> None:
    parser.add_argument("--source", required=True, help="the weights: a checkpoint path/URL/s3 URI, or random:SIZE")
    parser.add_argument(
        "--variants",
        default="engine=openvino,precision=fp32",
        help="semicolon-separated predictor options per engine to prepare (default: engine=openvino,precision=fp32)",
    )


def main(args) -> int:
    try:
        specs = [variant_spec(args.source, v) for v in args.variants.split(";") if v.strip()]
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    status = 0
    for spec in specs:
        start = time.perf_counter()
        try:
            predictor = load_predictor(spec, calibration=noc_calibration(args.data_root))
        except (ValueError, RuntimeError) as exc:
            print(f"{spec}: FAILED: {exc}")
            status = 1
            continue
        facts = getattr(getattr(predictor, "engine", None), "facts", {})
        print(f"{spec}: ready in {time.perf_counter() - start:.1f} s ({predictor.runs_as}); {facts}")
    return status
