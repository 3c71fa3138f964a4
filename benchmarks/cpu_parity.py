"""Parity of the optimised CPU variants with fp32 eager, on GrabCut and Berkeley instances clicked by the NoC
protocol's clicker.

Paired comparison: the clicker answers the fp32 predictor; at every click the variant gets the very same inputs
(clicks, previous probabilities and zoom-in region). Per click: mean |dp| of the probabilities, the IoU between the
two masks (``p > 0.49``), and, because untrained weights give near-empty or near-full masks, the logits' mean |d|
relative to their spread and the IoU of the two masks cut at the fp32 logits' median (half the image each: where
the ranking of pixels, not only the far tails, must agree). With ``--noc`` each
predictor also runs its own NoC loop (the evaluation's ``evaluate_predictor``) and the per-click mIoU curves and
NoC@90 are compared: the criterion for trained weights (within 0.5 IoU points and 0.05 clicks).

Untrained weights come in two kinds (``--weights``): ``default`` is ``random:base`` (the network's own
initialisation: logits around -10, masks of a few percent of the image with very soft edges, so that any rounding
moves their boundary) and ``seeded`` (every weight ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.01): well-conditioned
activations through the depth of the network, like the weights of the golden-output tests).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adaptiveclick.evaluation import evaluate_predictor, open_dataset, simulate
from adaptiveclick.model.build import build_adaptiveclick
from adaptiveclick.model.loading import load_predictor, predictor_for_network
from adaptiveclick.model.prediction import PROB_THRESHOLD
from adaptiveclick.model.predictor import AdaptiveClickPredictor
from adaptiveclick.model.spec import parse_spec

from .common import machine_line, print_table
from .openvino_prepare import noc_calibration
from .variants import BASELINE_VARIANT, DEFAULT_VARIANTS, unavailable_reason, variant_spec

DATASETS = ("GrabCut", "Berkeley")
IOU_TARGET = 0.99
CURVE_TARGET_POINTS = 0.5  # IoU points (1 point = 0.01 IoU)
NOC_TARGET = 0.05
COMPARED_VARIANTS = [v for v in DEFAULT_VARIANTS if v != BASELINE_VARIANT]  # each against the fp32 eager baseline


@dataclass(frozen=True)
class ClickParity:
    mean_abs_dp: float
    mask_iou: float  # masks at the protocol threshold
    relative_logit_error: float  # mean |d logit| / std of the fp32 logits
    median_cut_iou: float  # masks cut at the fp32 logits' median


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Logits recovered from float32 probabilities (exact where p is not within float32 rounding of 1)."""
    p = np.clip(probs.astype(np.float64), 1e-300, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(reference: np.ndarray, candidate: np.ndarray) -> ClickParity:
    """Probabilities ``[H, W]`` of fp32 eager and of a variant for the same click."""
    ref_logits, cand_logits = logits_of(reference), logits_of(candidate)
    cut = np.median(ref_logits)
    return ClickParity(
        mean_abs_dp=float(np.abs(reference - candidate).mean()),
        mask_iou=mask_iou(reference > PROB_THRESHOLD, candidate > PROB_THRESHOLD),
        relative_logit_error=float(np.abs(ref_logits - cand_logits).mean() / max(ref_logits.std(), 1e-12)),
        median_cut_iou=mask_iou(ref_logits > cut, cand_logits > cut),
    )


def paired_parity(reference, candidate, sample, n_clicks: int) -> list[ClickParity]:
    """Per click, how far ``candidate`` is from ``reference`` on one instance.

    Both get the same inputs at every click: the clicks the NoC clicker places for the reference's masks, and the
    reference's previous probabilities and zoom-in region. This measures the error of one step; how errors add up
    over a session (each side feeding its own masks back) is what the NoC comparison (``--noc``) measures.
    """
    candidate.set_image(sample.image)
    results = []
    for step in simulate(reference, sample, n_clicks):
        cand_step = candidate.step(step.clicks, step.previous_probs, step.previous_roi)
        results.append(compare(step.prediction.probs, cand_step.probs))
    return results


def summarize(per_click: list[ClickParity]) -> dict:
    return {
        "clicks": len(per_click),
        "mean_abs_dp": float(np.mean([c.mean_abs_dp for c in per_click])),
        "mask_iou": float(np.mean([c.mask_iou for c in per_click])),
        "min_mask_iou": float(np.min([c.mask_iou for c in per_click])),
        "relative_logit_error": float(np.mean([c.relative_logit_error for c in per_click])),
        "median_cut_iou": float(np.mean([c.median_cut_iou for c in per_click])),
    }


def noc_parity(reference, candidate, samples, n_clicks: int) -> dict:
    """Each predictor runs its own NoC loop; the mIoU curves (in IoU points) and NoC@90 are compared."""
    ref = evaluate_predictor(reference, samples, n_clicks=n_clicks)
    cand = evaluate_predictor(candidate, samples, n_clicks=n_clicks)
    gap = 100 * np.abs(ref.miou_per_click - cand.miou_per_click)
    return {
        "max_curve_gap_points": float(gap.max()),
        "noc90_ref": ref.noc(0.90),
        "noc90": cand.noc(0.90),
        "noc90_gap": abs(ref.noc(0.90) - cand.noc(0.90)),
    }


def seeded_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter, in place: matrices/kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.01),
    other vectors ~ N(0, 0.02^2). Shared parameters are drawn once."""
    gen = torch.Generator().manual_seed(seed)
    norm_scales = {
        id(m.weight) for m in net.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None
    }
    with torch.no_grad():
        for param in net.parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.dim() > 1:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif id(param) in norm_scales:
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.02 * noise)
    return net


def predictor_factory(source: str, weights: str = "default", data_root=None) -> Callable[[str], AdaptiveClickPredictor]:
    """``variant -> predictor`` for ``source``: a checkpoint goes through ``load_predictor`` (what the backend
    does); untrained ``random:SIZE`` weights are built once and converted (or compiled by OpenVINO) per variant.
    ``int8-static`` calibrates on the NoC clicker's GrabCut clicks under ``data_root``."""
    spec = parse_spec(source)
    calibration = noc_calibration(data_root)
    if not spec.is_random:
        return lambda variant: load_predictor(variant_spec(source, variant), calibration=calibration)
    if weights not in ("default", "seeded"):
        raise ValueError(f"--weights {weights!r}: expected default or seeded")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_adaptiveclick(spec.source.split(":", 1)[1])
    if weights == "seeded":
        seeded_weights(net)

    def make(variant: str) -> AdaptiveClickPredictor:
        options = parse_spec(variant_spec(source, variant))
        version = f"{spec.source}-{weights}-{options.option('engine', 'torch')}-{options.option('precision', 'fp32')}"
        return predictor_for_network(copy.deepcopy(net), options, version, torch.device("cpu"), calibration)

    return make


def run(
    source: str,
    variants: list[str],
    data_root,
    instances: int,
    clicks: int,
    noc: bool = False,
    noc_clicks: int = 20,
    weights: str = "default",
) -> list[dict]:
    make = predictor_factory(source, weights, data_root)
    reference = make("precision=fp32")
    results = []
    for variant in variants:
        spec = variant_spec(source, variant)
        reason = unavailable_reason(spec)
        if reason:
            results.append({"spec": spec, "skipped": reason})
            continue
        candidate = make(variant)
        for name in DATASETS:
            dataset = open_dataset(name, data_root)
            samples = [dataset[i] for i in range(min(instances, len(dataset)))]
            per_click = [c for s in samples for c in paired_parity(reference, candidate, s, clicks)]
            row = {"spec": spec, "dataset": name, "instances": len(samples), **summarize(per_click)}
            if noc:
                row.update(noc_parity(reference, candidate, samples, noc_clicks))
            results.append(row)
        del candidate
    print_results(results, noc, weights if parse_spec(source).is_random else "checkpoint")
    return results


def print_results(results: list[dict], noc: bool, weights: str) -> None:
    print(f"machine: {machine_line()}")
    print(f"weights: {weights}")
    headers = [
        "variant",
        "dataset",
        "instances x clicks",
        "mean abs dp",
        "mask IoU (p > 0.49)",
        "min mask IoU",
        "logit error / logit std",
        "IoU at fp32 median logit",
    ]
    if noc:
        headers += ["max mIoU-curve gap (points)", "NoC@90 fp32", "NoC@90 variant", "NoC@90 gap"]
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["spec"], "-", "not run: " + r["skipped"]] + [""] * (len(headers) - 3))
            continue
        row = [
            r["spec"],
            r["dataset"],
            f"{r['instances']} x {r['clicks'] // max(r['instances'], 1)}",
            f"{r['mean_abs_dp']:.2e}",
            f"{r['mask_iou']:.4f}",
            f"{r['min_mask_iou']:.4f}",
            f"{r['relative_logit_error']:.4f}",
            f"{r['median_cut_iou']:.4f}",
        ]
        if noc:
            row += [
                f"{r['max_curve_gap_points']:.2f}",
                f"{r['noc90_ref']:.2f}",
                f"{r['noc90']:.2f}",
                f"{r['noc90_gap']:.2f}",
            ]
        rows.append(row)
    print_table(
        headers, rows, title="Parity with fp32 eager (paired NoC clicks: same clicks, previous mask and region)"
    )
    for refused in (r for r in results if "skipped" in r):
        print(f"{refused['spec']}: not run on this CPU ({refused['skipped']})")
    ran = [r for r in results if "skipped" not in r]
    for spec in dict.fromkeys(r["spec"] for r in ran):
        mine = [r for r in ran if r["spec"] == spec]
        mean_iou = float(np.mean([r["mask_iou"] for r in mine]))
        meets = "meets" if mean_iou >= IOU_TARGET else "FAILS"
        verdict = f"{spec}: mean mask IoU {mean_iou:.4f} ({meets} >= {IOU_TARGET})"
        if noc:
            ok = all(r["max_curve_gap_points"] <= CURVE_TARGET_POINTS and r["noc90_gap"] <= NOC_TARGET for r in mine)
            verdict += (
                f"; mIoU curve within {CURVE_TARGET_POINTS} points and NoC@90 within {NOC_TARGET}: "
                f"{'yes' if ok else 'NO'}"
            )
        print(verdict)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--source",
        default="random:base",
        help="weights: random:base (default, untrained) or a checkpoint path/URL/s3 URI",
    )
    parser.add_argument(
        "--variants",
        default=";".join(COMPARED_VARIANTS),
        help=f"semicolon-separated predictor options per variant (default: {';'.join(COMPARED_VARIANTS)})",
    )
    parser.add_argument(
        "--weights",
        default="default",
        choices=("default", "seeded"),
        help="untrained weights for random:SIZE: the network's initialisation (default) or "
        "well-conditioned seeded weights",
    )
    parser.add_argument("--instances", type=int, default=5, help="instances per dataset (default 5)")
    parser.add_argument("--clicks", type=int, default=5, help="paired clicks per instance (default 5)")
    parser.add_argument(
        "--noc",
        action="store_true",
        help="also run each predictor's own NoC loop and compare mIoU curves and NoC@90 "
        "(meaningful with trained weights)",
    )
    parser.add_argument("--noc-clicks", type=int, default=20, help="clicks of the NoC loops (default 20)")


def main(args) -> int:
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if not variants or args.instances < 1 or args.clicks < 1 or args.noc_clicks < 1:
        print("error: give at least one variant, and --instances, --clicks, --noc-clicks >= 1")
        return 2
    try:
        for v in variants:
            variant_spec(args.source, v)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    torch.set_grad_enabled(False)
    run(args.source, variants, args.data_root, args.instances, args.clicks, args.noc, args.noc_clicks, args.weights)
    return 0
