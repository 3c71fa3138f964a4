"""Multi-scale deformable attention: compiled kernels vs the PyTorch reference at the model's shapes.

Times ``ops.ms_deform_attn`` with each implementation forced in turn (the PyTorch reference, the C++ CPU kernel,
and on a GPU the CUDA kernel and the reference on the GPU), forward alone and forward + backward, and prints the
speed-ups against the reference on the same device and dtype. The variants are interleaved call by call, so load
from other processes hits them alike and the ratios stay meaningful on a busy machine.

    adaptiveclick benchmark msda                    # 448 input: levels 14/28/56, 8 heads x 32, 4 points, N=1
    adaptiveclick benchmark msda --batch 2 --repeats 50 --cpu-dtypes float32,bfloat16 --isas
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from adaptiveclick.ops import build
from adaptiveclick.ops.dispatch import IMPL_ENV, ms_deform_attn
from adaptiveclick.ops.synthetic import (
    MODEL_CHANNELS,
    MODEL_HEADS,
    MODEL_LEVELS,
    MODEL_POINTS,
    MSDAInputs,
    random_inputs,
)

from .common import machine_line, print_table


@dataclass
class Variant:
    """One timed configuration: an implementation on a device, in a dtype (and a CPU instruction set)."""

    device: str
    dtype: torch.dtype
    impl: str
    isa: str | None = None
    forward: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        names = {"pytorch": "PyTorch reference", "cpu": "C++ kernel", "cuda": "CUDA kernel"}
        return names[self.impl] + (f" ({self.isa})" if self.isa else "")


def _timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _run_once(variant: Variant, inputs: MSDAInputs, grad_output: torch.Tensor) -> None:
    os.environ[IMPL_ENV] = variant.impl
    if variant.isa:
        torch.ops.adaptiveclick_msda_cpu.select_instruction_set(variant.isa)
    with torch.no_grad():
        variant.forward.append(_timed(lambda: ms_deform_attn(*inputs.args()), variant.device))
    leaves = [t.detach().requires_grad_() for t in (inputs.value, inputs.sampling_locations, inputs.attention_weights)]

    def train_step():
        out = ms_deform_attn(leaves[0], inputs.spatial_shapes, inputs.level_start_index, leaves[1], leaves[2])
        out.backward(grad_output)

    variant.train.append(_timed(train_step, variant.device))


def variants_for(device: str, dtype: torch.dtype, all_isas: bool) -> list[Variant]:
    """The reference plus whichever compiled kernel builds for ``device`` (a failed build is reported, not fatal)."""
    found = [Variant(device, dtype, "pytorch")]
    try:
        build.load(device)
    except build.BuildError as exc:
        print(f"note: the {device} kernel is unavailable, timing the reference only: {str(exc)[-300:]}")
        return found
    if device == "cpu":
        isas = torch.ops.adaptiveclick_msda_cpu.instruction_sets()
        found += [Variant(device, dtype, "cpu", isa) for isa in (isas if all_isas else isas[:1])]
    else:
        found.append(Variant(device, dtype, "cuda"))
    return found


def measure(variants: list[Variant], inputs: MSDAInputs, repeats: int, warmup: int) -> None:
    grad_output = torch.randn(
        inputs.value.shape[0],
        inputs.sampling_locations.shape[1],
        inputs.value.shape[2] * inputs.value.shape[3],
        generator=torch.Generator().manual_seed(0),
    )
    grad_output = grad_output.to(device=inputs.value.device, dtype=inputs.value.dtype)
    saved_env = os.environ.get(IMPL_ENV)
    saved_isa = None
    if any(v.isa for v in variants):
        saved_isa = torch.ops.adaptiveclick_msda_cpu.instruction_set()
    try:
        for i in range(warmup + repeats):
            for variant in variants:
                _run_once(variant, inputs, grad_output)
                if i < warmup:
                    variant.forward.pop()
                    variant.train.pop()
    finally:
        if saved_env is None:
            os.environ.pop(IMPL_ENV, None)
        else:
            os.environ[IMPL_ENV] = saved_env
        if saved_isa:
            torch.ops.adaptiveclick_msda_cpu.select_instruction_set(saved_isa)


def run(
    batch: int = 1,
    levels=MODEL_LEVELS,
    repeats: int = 20,
    warmup: int = 3,
    cpu_dtypes=(torch.float32,),
    cuda_dtypes=(torch.float32, torch.float16, torch.bfloat16),
    all_isas: bool = False,
    use_cuda: bool = True,
) -> list[Variant]:
    inputs = random_inputs(batch, levels, MODEL_HEADS, MODEL_CHANNELS, MODEL_POINTS)
    plans = [("cpu", dtype) for dtype in cpu_dtypes]
    if use_cuda and torch.cuda.is_available():
        plans += [("cuda", dtype) for dtype in cuda_dtypes]
    results: list[Variant] = []
    for device, dtype in plans:
        variants = variants_for(device, dtype, all_isas)
        measure(variants, inputs.to(dtype=dtype, device=device), repeats, warmup)
        results += variants

    size = int(inputs.spatial_shapes.prod(1).sum())
    print(f"machine: {machine_line()}")
    rows = []
    for v in results:
        ref = next(r for r in results if r.device == v.device and r.dtype == v.dtype and r.impl == "pytorch")
        fwd, train = float(np.median(v.forward)), float(np.median(v.train))
        ref_fwd, ref_train = float(np.median(ref.forward)), float(np.median(ref.train))
        rows.append(
            [
                v.device,
                str(v.dtype).replace("torch.", ""),
                v.label,
                f"{fwd * 1e3:.2f}",
                f"{ref_fwd / fwd:.1f}x",
                f"{train * 1e3:.2f}",
                f"{ref_train / train:.1f}x",
            ]
        )
    print_table(
        ["device", "dtype", "implementation", "forward p50 (ms)", "vs reference", "fwd+bwd p50 (ms)", "vs reference"],
        rows,
        title=f"MSDA at N={batch}, levels {'/'.join(f'{h}x{w}' for h, w in levels)} (S = Lq = {size}), "
        f"{MODEL_HEADS} heads x {MODEL_CHANNELS}, {MODEL_POINTS} points; median of {repeats}",
    )
    if not torch.cuda.is_available():
        print("\nno GPU here: the CUDA rows are missing (run the same command on a GPU machine)")
    return results


def _dtypes(text: str) -> tuple[torch.dtype, ...]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if not isinstance(getattr(torch, name, None), torch.dtype) or not getattr(torch, name).is_floating_point:
            raise ValueError(f"unknown floating dtype {name!r}")
    return tuple(getattr(torch, name) for name in names)


def _levels(text: str) -> tuple[tuple[int, int], ...]:
    levels = []
    for lvl in text.split(","):
        parts = lvl.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"bad --levels {text!r}: expected e.g. 14x14,28x28,56x56")
        levels.append((int(parts[0]), int(parts[1])))
    return tuple(levels)


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=1, help="N (1; 2 with flip averaging; more in training)")
    parser.add_argument(
        "--levels", default="14x14,28x28,56x56", help="feature levels HxW (default: the model at 448 input)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per variant first (default 3)")
    parser.add_argument("--cpu-dtypes", default="float32", help="CPU dtypes, e.g. float32,bfloat16")
    parser.add_argument("--cuda-dtypes", default="float32,float16,bfloat16", help="GPU dtypes")
    parser.add_argument("--isas", action="store_true", help="time every CPU instruction set the kernel has")
    parser.add_argument("--no-cuda", action="store_true", help="skip the GPU rows even with a GPU")


def main(args) -> int:
    try:
        levels, cpu_dtypes, cuda_dtypes = _levels(args.levels), _dtypes(args.cpu_dtypes), _dtypes(args.cuda_dtypes)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        print("error: --batch and --repeats must be >= 1, --warmup >= 0")
        return 2
    run(args.batch, levels, args.repeats, args.warmup, cpu_dtypes, cuda_dtypes, args.isas, not args.no_cuda)
    return 0
