"""OpenCV's GrabCut in a helper process that can be stopped: how the baseline keeps a time limit per step (a click's
GrabCut from seed labels, and a box's from its rectangle).

One GrabCut iteration can take many seconds on a flat image (max-flow over a degenerate graph: a plain white image
takes about a hundred times as long as a photo of the same size), and a running C call cannot be interrupted
inside the calling process. The helper is a fresh interpreter (``python -m adaptiveclick.model.grabcut_worker``: it
shares no threads or CUDA state with the server, and unlike a multiprocessing child it never re-imports the caller's
main script) that imports only OpenCV and NumPy and talks over a socket pair; when a call runs past its limit the helper
is killed, the call raises :class:`~model.predictor.StepTimeout`, and the next call starts a new helper. The
arithmetic is the same as in process (``cv2.setRNGSeed(0)`` before each call), so the results are identical.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

STARTUP_ALLOWANCE_S = 30.0  # for a new helper to import OpenCV and say it is ready (not counted in a call's limit)


Rect = tuple[int, int, int, int]  # (x, y, width, height) in image pixels, as cv2.grabCut takes a rectangle


def grabcut(image: np.ndarray, labels: np.ndarray, iterations: int, rect: Rect | None = None) -> np.ndarray:
    """Run ``cv2.grabCut`` on ``image`` ``[H, W, 3]`` uint8 and return its labels ``[H, W]`` uint8 (``GC_BGD``,
    ``GC_FGD``, ``GC_PR_BGD``, ``GC_PR_FGD``).

    Without ``rect``, GrabCut refines a copy of ``labels`` (``GC_INIT_WITH_MASK``); with ``rect``, it starts from the
    rectangle (``GC_INIT_WITH_RECT``: outside it background, inside probable foreground; ``labels`` only gives the
    shape). Deterministic: OpenCV's RNG (GrabCut's k-means initialisation) is re-seeded first."""
    import cv2

    labels = labels.copy()
    cv2.setRNGSeed(0)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    if rect is None:
        cv2.grabCut(image, labels, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    else:
        cv2.grabCut(image, labels, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    return labels


def _serve(conn: Connection) -> None:
    """The helper's loop: ``(image, labels, iterations, rect)`` in, GrabCut's labels (or the error's text) out."""
    import cv2  # noqa: F401 - imported before saying ready, so that no call's time limit pays for it

    conn.send(("ready", None))
    while True:
        try:
            image, labels, iterations, rect = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        try:
            conn.send(("ok", grabcut(image, labels, iterations, rect)))
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class GrabCutWorker:
    """One helper process, used by one call at a time (a lock), restarted after a timeout or a crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def run(
        self, image: np.ndarray, labels: np.ndarray, iterations: int, time_limit: float, rect: Rect | None = None
    ) -> np.ndarray:
        """:func:`grabcut` in the helper, within ``time_limit`` seconds (TimeoutError beyond: the helper is
        killed)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.send((image, labels, iterations, rect))
                ready = conn.poll(time_limit)
            except (BrokenPipeError, EOFError, OSError):
                ready = False
            if not ready:
                self._stop()
                raise TimeoutError(f"GrabCut ran past its limit of {time_limit:.1f} s and was stopped")
            try:
                status, result = conn.recv()
            except (EOFError, OSError):
                self._stop()
                raise RuntimeError("the GrabCut helper process died") from None
        if status != "ok":
            raise RuntimeError(f"GrabCut failed: {result}")
        return result

    def _connection(self) -> Connection:
        if self._process is None or self._process.poll() is not None or self._conn is None:
            self._stop()
            parent, child = socket.socketpair()
            # the folder `adaptiveclick` is imported from (site-packages, or a checkout), so the helper runs this
            # same code; not this file's resolved path, which in a checkout is the linked folder's
            source_root = str(Path(sys.modules["adaptiveclick"].__file__ or "").resolve().parents[1])
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")])),
            }
            self._process = subprocess.Popen(
                [sys.executable, "-m", "adaptiveclick.model.grabcut_worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
            child.close()
            self._conn = Connection(parent.detach())
            if not (self._conn.poll(STARTUP_ALLOWANCE_S) and self._conn.recv()[0] == "ready"):
                self._stop()
                raise RuntimeError(f"the GrabCut helper process did not start within {STARTUP_ALLOWANCE_S:g} s")
        return self._conn

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None


#: the process-wide helper (started on first use)
WORKER = GrabCutWorker()


def _forget_helper() -> None:
    """A forked child must not share its parent's helper (its pipe belongs to the parent)."""
    global WORKER
    WORKER = GrabCutWorker()


os.register_at_fork(after_in_child=_forget_helper)


if __name__ == "__main__":  # the helper: python -m adaptiveclick.model.grabcut_worker <socket fd>
    _serve(Connection(int(sys.argv[1])))
