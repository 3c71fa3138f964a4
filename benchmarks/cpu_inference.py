"""AdaptiveClick per-click latency on the CPU: fp32 eager against each optimised variant, side by side.

Each variant (a set of predictor-spec options such as ``precision=int8`` or ``engine=openvino,precision=bf16``)
runs in its own worker process (:mod:`benchmarks.variant_worker`), so that its peak memory (RSS) is its own; the
parent replays the same NoC click sequences on GrabCut images through the workers one at a time, rotating which
variant goes first, so that load from other work on the machine spreads over all variants alike. The first click of
an image (``set_image`` + the first network run) is reported apart from the later clicks, and the network's own
time (torch or the engine) apart from the whole click. Latency ratios are to torch fp32 eager of the same run.

OpenVINO variants start from an empty IR cache of their own (``--engine-cache fresh``, the default), so their load
time is a first start (export, compress or calibrate, compile); after the timed rounds a second worker per variant
loads from that cache (the cached start) and runs one session (its peak RSS is the serving footprint). ``--http``
adds the same measurement through the HTTP backend (``benchmarks.http_backend``) for fp32 and the fastest variant.

``--write-defaults`` turns the run into this CPU class's entry of :mod:`model.fast.defaults` (the table the default
CPU variant is chosen from), prints it and writes it into that module: run it with AdaptiveClick-B
(``random:base``, the default source) and every variant this CPU runs, on a CPU of the class, or under the caps
that make a bigger CPU behave like one (:data:`CAP_ENV`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.model.fast import default_variant, defaults, explain_default
from adaptiveclick.model.fast.optimize import DEFAULT_MEASURED_ON, VARIANTS_WITH_PARITY
from adaptiveclick.model.loading import load_predictor
from adaptiveclick.ops.cpu_features import cpu_flags, cpu_name, native_flags

from .common import machine_line, percentiles, print_table
from .http_backend import click_sequences
from .variant_worker import VariantWorker
from .variants import (
    BASELINE_VARIANT,
    DEFAULT_VARIANTS,
    is_baseline,
    is_engine,
    unavailable_reason,
    variant_of,
    variant_spec,
)

FIRST_CLICK_TARGET_S = 0.6
LATER_CLICK_TARGET_S = {"amx": 0.35, "no-amx": 0.5}  # with AMX, and AVX-512 VNNI without it
SPEED_UP_TARGET = 2.0
REPORTED_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})
# a 1-minute load average above this many times the CPU count during a --write-defaults run is reported as busy
BUSY_LOAD = 1.5
# the variables that make this CPU behave like an older one (ops.cpu_features), shown in a written entry's command
CAP_ENV = (
    "ADAPTIVECLICK_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "OV_CPU_MAX_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "FBGEMM_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def later_target() -> float:
    return LATER_CLICK_TARGET_S["amx" if cpu_flags() & {"amx_int8", "amx_bf16"} else "no-amx"]


def run(
    source: str,
    variants: list[str],
    data_root: Path,
    images: int,
    clicks: int,
    rounds: int,
    warmup: int = 1,
    engine_cache: str = "fresh",
) -> list[dict]:
    dataset = GrabCutDataset(data_root / "GrabCut")
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    specs = [variant_spec(source, v) for v in variants]
    skipped = {s: r for s in specs if (r := unavailable_reason(s))}
    runnable = [s for s in specs if s not in skipped]
    print(f"machine: {machine_line()}")
    print(f"CPU flags used: {', '.join(sorted(cpu_flags() & REPORTED_FLAGS)) or 'none'}")
    print(f"default variant on this CPU for AdaptiveClick-B: {','.join(default_variant('cpu', 'base'))}")
    print(f"  why: {explain_default()}")
    start_load, start_1min = load_average(), os.getloadavg()[0]
    print(f"load average at start: {start_load}")
    if not runnable:
        print_results([], skipped, len(samples), clicks, rounds)
        return []
    # NoC clicks made once, on torch fp32 (a variant's own masks would move the clicks)
    reference = next((s for s in runnable if is_baseline(s)), variant_spec(source, BASELINE_VARIANT))
    reference_predictor = load_predictor(reference)
    network = reference_predictor.net.config.name
    sequences = click_sequences(reference_predictor, samples, clicks)
    del reference_predictor
    scratch = tempfile.mkdtemp(prefix="adaptiveclick-engine-cache-") if engine_cache == "fresh" else None
    caches = {s: os.path.join(scratch, f"variant{i}") for i, s in enumerate(runnable) if scratch and is_engine(s)}
    workers, cached = [], {}
    try:
        workers = [VariantWorker(s, caches.get(s), data_root) for s in runnable]
        for worker in workers:
            for _ in range(warmup):
                worker.warm_up(samples[0].image, sequences[0][:2])
        for r in range(rounds):
            for i, (sample, sequence) in enumerate(zip(samples, sequences)):
                shift = (r * len(samples) + i) % len(workers)
                for worker in workers[shift:] + workers[:shift]:
                    worker.run(sample.image, sequence)
        for worker in workers:
            worker.close()
        for spec in filter(is_engine, runnable):  # a second start, from the cache the first one filled
            again = VariantWorker(spec, caches.get(spec), data_root)
            try:
                again.warm_up(samples[0].image, sequences[0])
                cached[spec] = {"load_s": again.load_seconds, "facts": again.facts, "rss_mb": again.rss_mb}
            finally:
                again.close()
    finally:
        for worker in workers:
            worker.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    end_load = load_average()
    print(f"load average at the end: {end_load}")
    results = [
        {
            "spec": w.spec,
            "net": network,
            "load": f"{start_load} at the start, {end_load} at the end",
            "busiest": max(start_1min, os.getloadavg()[0]),  # 1-minute load averages
            "precision": w.precision,
            "runs_as": w.runs_as,
            "first": percentiles(w.first),
            "later": percentiles(w.later),
            "later_min": float(np.min(w.later)),
            "network": percentiles(w.network_later),
            "rss_mb": w.rss_mb,
            "load_rss_mb": w.load_rss_mb,
            "load_s": w.load_seconds,
            "facts": w.facts,
            "cached": cached.get(w.spec),
        }
        for w in workers
    ]
    print_results(results, skipped, len(samples), clicks, rounds)
    return results


def print_results(results: list[dict], skipped: dict[str, str], images: int, clicks: int, rounds: int) -> None:
    for spec, reason in skipped.items():
        print(f"{spec}: not run: {reason}")
    if not results:
        return
    base = next((r for r in results if is_baseline(r["spec"])), results[0])
    rows = []
    for r in results:
        rows.append(
            [
                r["spec"],
                r["runs_as"].replace("|", "/"),
                f"{r['first']['p50']:.3f}",
                f"{r['first']['p95']:.3f}",
                f"{r['later']['p50']:.3f}",
                f"{r['later']['p95']:.3f}",
                f"{r['later_min']:.3f}",
                f"{r['network']['p50']:.3f}",
                f"{base['later']['p50'] / r['later']['p50']:.2f}x",
                f"{base['first']['p50'] / r['first']['p50']:.2f}x",
                f"{(r['cached'] or r)['rss_mb']:.0f}",
                f"{r['load_s']:.1f}",
            ]
        )
    rows += [[spec, "-", "not run: " + reason.replace("|", "/")] + [""] * 9 for spec, reason in skipped.items()]
    print_table(
        [
            "variant",
            "runs as",
            "first click p50 (s)",
            "first p95 (s)",
            "later p50 (s)",
            "later p95 (s)",
            "later min (s)",
            "network p50 (s)",
            "later speed-up vs fp32",
            "first speed-up vs fp32",
            "peak RSS (MB)",
            "load (s)",
        ],
        rows,
        title=f"AdaptiveClick per-click latency on {images} GrabCut images x {clicks} clicks x {rounds} rounds "
        f"(first click includes set_image; network: the later clicks' network alone; ratios to {base['spec']} of "
        "this run; peak RSS of an OpenVINO variant: its cached start plus one session)",
    )
    engines = [r for r in results if r.get("cached") or r["facts"]]
    if engines:
        print_table(
            [
                "variant",
                "first start (s)",
                "export (s)",
                "compress/quantise (s)",
                "compile (s)",
                "cached start (s)",
                "cached compile (s)",
                "peak RSS after first start (MB)",
                "peak RSS cached start + 1 session (MB)",
            ],
            [
                [
                    r["spec"],
                    f"{r['load_s']:.1f}",
                    _seconds(r["facts"].get("export_s")),
                    _seconds(r["facts"].get("transform_s")),
                    _seconds(r["facts"].get("compile_s")),
                    f"{r['cached']['load_s']:.1f}" if r.get("cached") else "-",
                    _seconds(r["cached"]["facts"].get("compile_s")) if r.get("cached") else "-",
                    f"{r['load_rss_mb']:.0f}",
                    f"{r['cached']['rss_mb']:.0f}" if r.get("cached") else "-",
                ]
                for r in engines
            ],
            title="OpenVINO engine start-up (a first start exports into an empty IR cache; the cached start is a "
            "fresh process loading it)",
        )
    best = min(results, key=lambda r: r["later"]["p50"])
    target, speed_up = later_target(), base["later"]["p50"] / best["later"]["p50"]
    print(
        f"\nfastest: {best['spec']}: later clicks p50 {best['later']['p50']:.3f} s (target {target} s: "
        f"{'met' if best['later']['p50'] <= target else 'NOT met'}; {speed_up:.2f}x fp32 eager, target "
        f"{SPEED_UP_TARGET}x: {'met' if speed_up >= SPEED_UP_TARGET else 'NOT met'}), first click p50 "
        f"{best['first']['p50']:.3f} s (target {FIRST_CLICK_TARGET_S} s: "
        f"{'met' if best['first']['p50'] <= FIRST_CLICK_TARGET_S else 'NOT met'})"
    )


def measurements(results: list[dict]) -> tuple[defaults.Measurement, ...]:
    """A run's results as :class:`model.fast.defaults.Measurement` rows (ratios to its torch fp32 variant)."""
    base = next((r for r in results if is_baseline(r["spec"])), None)
    if base is None:
        raise ValueError(f"no {BASELINE_VARIANT} variant: the defaults are chosen by their ratio to it")
    rows = []
    for r in results:
        engine, precision = variant_of(r["spec"]) or ("torch", "fp32")
        rows.append(
            defaults.Measurement(
                engine=engine,
                precision=precision,
                later_p50_s=round(r["later"]["p50"], 3),
                speed_up=round(base["later"]["p50"] / r["later"]["p50"], 3),
                peak_rss_mb=round((r["cached"] or r)["rss_mb"], 3),
                first_start_s=round(r["load_s"], 3),
                cached_start_s=round(r["cached"]["load_s"], 3) if r.get("cached") else None,
            )
        )
    return tuple(rows)  # rounded as the table stores them


def command_line(args) -> str:
    """``adaptiveclick benchmark cpu ...`` as run (the options that matter), with the ISA caps that were set."""
    words = [f"{k}={os.environ[k]}" for k in CAP_ENV if os.environ.get(k)] + ["adaptiveclick", "benchmark", "cpu"]
    if args.source != "random:base":
        words += ["--source", shlex.quote(args.source)]
    if args.variants != ";".join(DEFAULT_VARIANTS):
        words += ["--variants", shlex.quote(args.variants)]
    words += ["--images", str(args.images), "--clicks", str(args.clicks), "--rounds", str(args.rounds)]
    return " ".join(words + ["--write-defaults"])


def class_entry(results: list[dict], command: str, flags: frozenset[str] | None = None) -> defaults.ClassEntry:
    """This CPU class's entry of :mod:`model.fast.defaults` from a run of AdaptiveClick-B."""
    networks = {r["net"] for r in results}
    if networks - set(DEFAULT_MEASURED_ON):
        raise ValueError(
            f"the defaults are measured on AdaptiveClick-{'/'.join(DEFAULT_MEASURED_ON)} (--source random:base), "
            f"not {', '.join(sorted(networks))}"
        )
    entry = defaults.ClassEntry(
        isa=defaults.isa_class(flags),
        native=defaults.isa_class(native_flags()),
        cpu=cpu_name(),
        command=command,
        load=results[0]["load"],
        measured=measurements(results),
    )
    return dataclasses.replace(entry, default=defaults.choose(entry, VARIANTS_WITH_PARITY))


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--source",
        default="random:base",
        help="weights: random:base (default), a checkpoint path/URL/s3 URI, with #options if needed",
    )
    parser.add_argument(
        "--variants",
        default=";".join(DEFAULT_VARIANTS),
        help="semicolon-separated predictor options per variant; the fp32 one is the baseline (default: every CPU "
        f"variant, {';'.join(DEFAULT_VARIANTS)}; engine=openvino,precision=int8-static after `benchmark "
        "openvino-prepare`, with --engine-cache shared)",
    )
    parser.add_argument("--images", type=int, default=5, help="GrabCut images (default 5)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per image (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every image (default 2)")
    parser.add_argument(
        "--engine-cache",
        choices=("fresh", "shared"),
        default="fresh",
        help="OpenVINO variants: start from an empty IR cache of their own, so the first load is a first start "
        "(fresh, default), or use the usual cache (shared)",
    )
    parser.add_argument(
        "--http", action="store_true", help="also measure through the HTTP backend (fp32 and the fastest variant)"
    )
    parser.add_argument("--http-rounds", type=int, default=1, help="repetitions through HTTP (default 1)")
    parser.add_argument(
        "--write-defaults",
        nargs="?",
        const=str(Path(defaults.__file__)),
        default=None,
        metavar="PATH",
        help="write this run as this CPU class's entry of the default-variant table (model/fast/defaults.py, or "
        "PATH: a copy of it) and print it; needs --source random:base and the precision=fp32 variant",
    )


def main(args) -> int:
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if not variants or args.images < 1 or args.clicks < 2 or args.rounds < 1:
        print("error: give at least one variant, --images >= 1, --clicks >= 2 and --rounds >= 1")
        return 2
    try:
        specs = [variant_spec(args.source, v) for v in variants]
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    if BASELINE_VARIANT not in variants:
        if getattr(args, "write_defaults", None):
            print(f"error: --write-defaults needs the {BASELINE_VARIANT} variant (the ratios are to it)")
            return 2
        print(f"note: no {BASELINE_VARIANT} variant: ratios are to {specs[0]}")
    torch.set_grad_enabled(False)
    results = run(
        args.source, variants, args.data_root, args.images, args.clicks, args.rounds, engine_cache=args.engine_cache
    )
    if getattr(args, "write_defaults", None) and results:
        try:
            entry = class_entry(results, command_line(args))
        except ValueError as exc:
            print(f"error: {exc}")
            return 2
        busy = results[0]["busiest"]
        if busy > BUSY_LOAD * (os.cpu_count() or 1):  # the run itself keeps about one CPU's worth busy per thread
            print(
                f"warning: load average up to {busy:.1f} on {os.cpu_count()} CPUs during the run: other work was "
                "competing, and it slows torch's OpenMP threads more than OpenVINO's; prefer an entry from a quiet run"
            )
        defaults.write_entry(entry, args.write_defaults)
        print(f"\nwrote the {entry.isa} entry of {args.write_defaults}:\n")
        print(defaults.render({entry.isa: entry}))
        print(defaults.explain(entry, entry.isa, VARIANTS_WITH_PARITY))
    if args.http and results:
        from . import http_backend

        fastest = min(results, key=lambda r: r["later"]["p50"])["spec"]
        http_specs = list(dict.fromkeys([variant_spec(args.source, BASELINE_VARIANT), fastest]))
        print(f"\nThrough the HTTP backend ({', '.join(http_specs)}):")
        http_backend.run(http_specs, args.data_root, args.images, args.clicks, args.http_rounds, rle_repeats=3)
    return 0
