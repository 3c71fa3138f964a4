"""Per-click /predict latency over HTTP against the bare predictor, side by side; brush RLE against the sdk.

For each predictor spec the script starts ``adaptiveclick serve`` (gunicorn, one worker) on loopback, serves GrabCut
images from a local HTTP server, and replays the same NoC click sequences (i) through HTTP the way Label Studio
sends them (all clicks of the object in every request) and (ii) on the bare predictor in this process
(``set_image`` once, then ``step`` per click). The server overhead of a click is
``(HTTP p50 - bare p50) / bare p50`` for clicks after the first; as a second, load-independent figure each request's
latency minus the model time the server reports for it (``Server-Timing``) is the time spent outside the model
(HTTP, JSON, cache, threshold, RLE). The RLE part times ``labelstudio.rle.encode_rle``
against ``label_studio_sdk.converter.brush.mask2rle`` on 3840x2160 masks and checks the bytes are identical.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests

from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.evaluation.simulation import simulate
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.rle import encode_rle
from adaptiveclick.model.loading import load_predictor

from .common import machine_line, percentiles, print_table, replay_clicks
from .servers import BackendProcess, ImageServer


def click_sequences(predictor, samples, clicks: int) -> list[list[tuple[int, int, bool]]]:
    """NoC click sequences (the Clicker answering the predictor), computed once and replayed by both sides."""
    sequences = []
    for sample in samples:
        *_, last = simulate(predictor, sample, clicks)
        sequences.append([(int(c.y), int(c.x), c.is_positive) for c in last.clicks])
    return sequences


def in_worker_thread(fn):
    """Run ``fn`` in a fresh thread, as gunicorn's gthread worker runs each request: torch's CPU thread pool
    behaves differently in the main thread (slower on a busy machine), which would flatter the server."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def time_bare(predictor, image, clicks) -> list[float]:
    """Seconds per click on the bare predictor; the first includes set_image."""
    return in_worker_thread(lambda: replay_clicks(predictor, image, clicks))


def predict_body(image_url: str, task_id: int, clicks, shape: tuple[int, int], project: str = "1.1") -> dict:
    """A ``/predict`` body as Label Studio sends it for ``clicks`` ``(y, x, is_positive)`` in pixels of an image of
    ``shape`` ``(H, W)``: every click of the object so far, in percent."""
    h, w = shape
    regions = [
        {
            "type": "keypointlabels",
            "is_positive": positive,
            "original_width": w,
            "original_height": h,
            "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "keypointlabels": ["Object"]},
        }
        for y, x, positive in clicks
    ]
    return {
        "tasks": [{"id": task_id, "data": {"image": image_url}}],
        "project": project,
        "label_config": recommended_config(),
        "params": {"context": {"result": regions}},
    }


def time_http(
    session, backend_url, image_url, shape, clicks, task_id, model_times: list[float] | None = None
) -> list[float]:
    """Seconds per click over HTTP, each request carrying all clicks so far (as Label Studio sends them). The
    server's own model time per request (its Server-Timing header) is appended to ``model_times``."""
    times = []
    for k in range(1, len(clicks) + 1):
        body = predict_body(image_url, task_id, clicks[:k], shape)
        start = time.perf_counter()
        response = session.post(backend_url + "/predict", json=body, timeout=600)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        if model_times is not None:
            timing = response.headers.get("Server-Timing", "model;dur=nan")
            model_times.append(float(timing.split("dur=")[1]) / 1e3)
    return times


def bench_spec(spec: str, samples, files: list[Path], image_server: ImageServer, clicks: int, rounds: int) -> dict:
    predictor = load_predictor(spec)
    sequences = click_sequences(predictor, samples, clicks)
    backend = BackendProcess(spec)
    bare, http = {"first": [], "later": []}, {"first": [], "later": []}
    overhead = []  # per later click: HTTP latency minus the server's model time for that very request
    try:
        session = requests.Session()
        # warm-up: first-call allocations on both sides
        time_http(
            session,
            backend.url,
            f"{image_server.url}/{files[0].name}",
            samples[0].mask.shape,
            sequences[0][:2],
            task_id=10**9,
        )
        time_bare(predictor, samples[0].image, sequences[0][:2])
        for r in range(rounds):
            for i, (sample, file, clicks_i) in enumerate(zip(samples, files, sequences)):
                task_id = r * len(samples) + i  # a new task each round: the first click fetches the image again
                url = f"{image_server.url}/{file.name}"
                model_times: list[float] = []
                sides = [
                    (
                        "http",
                        functools.partial(
                            time_http, session, backend.url, url, sample.mask.shape, clicks_i, task_id, model_times
                        ),
                    ),
                    ("bare", functools.partial(time_bare, predictor, sample.image, clicks_i)),
                ]
                for name, run in sides if (r + i) % 2 == 0 else sides[::-1]:  # alternate who goes first
                    times = run()
                    target = http if name == "http" else bare
                    target["first"].append(times[0])
                    target["later"] += times[1:]
                    if name == "http":
                        overhead += [t - m for t, m in zip(times[1:], model_times[1:])]
    finally:
        backend.close()
    return {
        "spec": spec,
        "version": predictor.model_version,
        "bare": {k: percentiles(v) for k, v in bare.items()},
        "http": {k: percentiles(v) for k, v in http.items()},
        "overhead": percentiles(overhead),
    }


def bench_rle(data_root: Path, repeats: int) -> list[list]:
    from label_studio_sdk.converter import brush

    yy, xx = np.mgrid[:2160, :3840]
    masks = {"ellipse 3840x2160": (yy - 1000) ** 2 / 800**2 + (xx - 1900) ** 2 / 1500**2 < 1}
    real = GrabCutDataset(data_root / "GrabCut")[0].mask.astype(np.uint8)
    masks["GrabCut mask upscaled to 3840x2160"] = cv2.resize(real, (3840, 2160), interpolation=cv2.INTER_NEAREST) > 0
    rows = []
    for name, mask in masks.items():
        ours, sdk = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            a = encode_rle(mask)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            b = brush.mask2rle(mask.astype(np.uint8) * 255)
            sdk.append(time.perf_counter() - start)
        rows.append(
            [
                name,
                f"{np.median(ours) * 1e3:.2f}",
                f"{np.median(sdk) * 1e3:.1f}",
                f"{np.median(sdk) / np.median(ours):.1f}x",
                "yes" if a == b else "NO",
                len(a),
            ]
        )
    return rows


def run(specs: list[str], data_root: Path, images: int, clicks: int, rounds: int, rle_repeats: int) -> list[dict]:
    dataset = GrabCutDataset(data_root / "GrabCut")
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    folder = Path(tempfile.mkdtemp(prefix="adaptiveclick-bench-"))
    files = []
    for sample in samples:
        source = next((data_root / "GrabCut" / "data_GT").glob(sample.name + ".*"))
        files.append(Path(shutil.copy(source, folder / source.name)))
    image_server = ImageServer(folder)
    try:
        results = [bench_spec(spec, samples, files, image_server, clicks, rounds) for spec in specs]
    finally:
        image_server.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"machine: {machine_line()}")
    rows = []
    for r in results:
        bare, http, extra = r["bare"]["later"]["p50"], r["http"]["later"]["p50"], r["overhead"]["p50"]
        rows.append(
            [
                r["spec"],
                r["version"],
                f"{r['bare']['first']['p50'] * 1e3:.1f}",
                f"{r['http']['first']['p50'] * 1e3:.1f}",
                f"{bare * 1e3:.1f}",
                f"{http * 1e3:.1f}",
                f"{(http - bare) / bare * 100:+.1f}%",
                f"{extra * 1e3:.1f}",
                f"{extra / bare * 100:.1f}%",
                r["http"]["later"]["n"],
            ]
        )
    print_table(
        [
            "predictor",
            "model version",
            "bare first (ms)",
            "HTTP first (ms)",
            "bare later p50 (ms)",
            "HTTP later p50 (ms)",
            "HTTP vs bare",
            "non-model time per request p50 (ms)",
            "non-model / bare",
            "later clicks timed",
        ],
        rows,
        title=f"Per-click latency: /predict over HTTP vs the bare predictor ({len(samples)} GrabCut images x "
        f"{clicks} clicks x {rounds} rounds; first click includes image fetch/decode and set_image)",
    )
    print_table(
        ["mask", "ours p50 (ms)", "sdk p50 (ms)", "speed-up", "identical bytes", "RLE bytes"],
        bench_rle(data_root, rle_repeats),
        title="Brush RLE encoding (labelstudio.rle vs label_studio_sdk)",
    )
    return results


def add_arguments(parser) -> None:
    parser.add_argument(
        "--specs",
        default="baseline,random:base",
        help="comma-separated predictor specs (default: baseline,random:base)",
    )
    parser.add_argument("--images", type=int, default=3, help="GrabCut images (default 3)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per image (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of every session (default 2)")
    parser.add_argument("--rle-repeats", type=int, default=15, help="timed RLE encodings per mask (default 15)")


def main(args) -> int:
    run(
        [s for s in args.specs.split(",") if s], args.data_root, args.images, args.clicks, args.rounds, args.rle_repeats
    )
    return 0
