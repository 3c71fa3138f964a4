"""One predictor variant in a worker process of its own: its own interpreter (no torch or OpenVINO state shared
with the other variants), its own peak RSS, and for the OpenVINO engine its own IR cache folder, so that its first
load is a true first start (export, compress or calibrate, compile) and a second worker's is a cached start."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time

import numpy as np

from .common import replay_clicks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _worker(conn, spec: str, engine_cache: str | None, data_root: str | None) -> None:
    """Holds one predictor; answers (image, clicks) with (seconds per click, network seconds per click, peak RSS
    in MB). A failure is sent back as ``("error", message)``."""
    try:
        import torch

        if engine_cache:
            from adaptiveclick.model.engine.ir_cache import CACHE_ENV

            os.environ[CACHE_ENV] = engine_cache
        from adaptiveclick.model.loading import load_predictor

        from .openvino_prepare import noc_calibration

        torch.set_grad_enabled(False)
        start = time.perf_counter()
        predictor = load_predictor(spec, calibration=noc_calibration(data_root))
        load_seconds = time.perf_counter() - start
        network: list[float] = []
        run_net = predictor._run_net

        def timed_run_net(*args):  # the network alone (engine or torch), inside the full click
            begin = time.perf_counter()
            logits = run_net(*args)
            network.append(time.perf_counter() - begin)
            return logits

        predictor._run_net = timed_run_net
        engine = getattr(predictor, "engine", None)
        precision = engine.precision if engine is not None else predictor.net.inference_precision
        facts = dict(getattr(engine, "facts", {}))
        conn.send((load_seconds, precision, predictor.runs_as, peak_rss_mb(), facts))
        while (job := conn.recv()) is not None:
            network.clear()
            times = replay_clicks(predictor, *job)
            conn.send((times, list(network), peak_rss_mb()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class VariantWorker:
    """A worker process for one variant.

    Args:
        spec: the predictor spec.
        engine_cache: the OpenVINO IR cache folder for this worker (None: the usual one).
        data_root: the datasets (``int8-static`` calibrates on GrabCut).
    """

    TIMEOUT_S = 1800

    def __init__(self, spec: str, engine_cache: str | None = None, data_root=None) -> None:
        self.spec = spec
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        root = str(data_root) if data_root is not None else None
        self.proc = context.Process(target=_worker, args=(child, spec, engine_cache, root), daemon=True)
        self.proc.start()
        self.load_seconds, self.precision, self.runs_as, self.rss_mb, self.facts = self._receive()
        self.load_rss_mb = self.rss_mb
        self.first: list[float] = []
        self.later: list[float] = []
        self.network_later: list[float] = []

    def _receive(self):
        deadline = time.monotonic() + self.TIMEOUT_S
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise RuntimeError(f"{self.spec}: the worker exited (code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec}: no answer from the worker within {self.TIMEOUT_S} s")
        message = self.conn.recv()
        if isinstance(message, tuple) and message and message[0] == "error":
            raise RuntimeError(f"{self.spec}: {message[1]}")
        return message

    def warm_up(self, image: np.ndarray, clicks) -> None:
        """One untimed session: first-call allocations, lazy kernel builds."""
        self.conn.send((image, clicks))
        *_, self.rss_mb = self._receive()

    def run(self, image: np.ndarray, clicks) -> None:
        self.conn.send((image, clicks))
        times, network, self.rss_mb = self._receive()
        self.first.append(times[0])
        self.later.extend(times[1:])
        self.network_later.extend(network[1:])

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
