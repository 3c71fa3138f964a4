"""The served models behind a small thread-safe holder, one per Label Studio project, ready for hot swaps.

Each request takes its project's :class:`ServedModel` once (:meth:`ModelHolder.current`) and uses it to the end,
so a swap never changes the model under a running request: in-flight requests finish on the old model, new ones
get the new one, and every response names the version that produced it. Which version a project gets is the
registry's (:mod:`storage.lines`: its pin, its line, the base line) or, with no registry version, the configured
predictor; the models themselves are loaded on demand into a :class:`~backend.model_pool.ModelPool`. A version
that fails to load is rejected (remembered with its reason) and the project keeps the model it had.

A predictor holds per-image state after ``set_image``, so one :class:`ServedModel` serialises its use with a lock
and remembers which image it holds: consecutive clicks on the same image skip ``set_image``; a request for another
image pays for one ``set_image`` (measured by ``adaptiveclick benchmark http``). On a CPU box with a few cores the
network already uses every core, so running two predictions in parallel would not finish either sooner.

Every request has a deadline (``ADAPTIVECLICK_REQUEST_DEADLINE``) for waiting for the model and using it: a step is
not started when the steps so far say it would end past the deadline, and a step that can be stopped (the
baseline's GrabCut) gets the time left as its limit. Each step's result is handed on as soon as it exists, so a
request that ends at its deadline leaves its finished steps in the session cache for the next click.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.box_segmenter import BoxMask, segment_boxes
from model.clicks import Click
from model.prediction import PROB_THRESHOLD, Roi
from model.predictor import Predictor, StepTimeout
from model.prompts import Box
from storage.lines import RegistryState, VersionRef

from .cache import StepState
from .errors import DEADLINE_SETTING, DeadlineExceeded, ModelBusy
from .model_pool import ModelPool

StepDone = Callable[[int, StepState], None]  # (clicks the state answers, state)
STEP_TIME_SMOOTHING = 0.3  # weight of the newest step in the running estimate of a step's time


CONFIGURED_LINE = "configured"  # the key's line of the configured predictor (ADAPTIVECLICK_PREDICTOR)


@dataclass
class ServedModel:
    """One loaded model: ``version`` is what replies report; ``key`` (``line/version``) names it uniquely, for the
    session cache and the pool."""

    predictor: Predictor
    version: str
    line: str = CONFIGURED_LINE
    memory_bytes: int = 0
    key: str = ""  # default: line/version
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _image_key: Hashable | None = field(default=None, repr=False)
    _step_seconds: float = field(default=0.0, repr=False)  # running estimate of one step's time

    def __post_init__(self) -> None:
        self.key = self.key or f"{self.line}/{self.version}"

    def run_steps(
        self,
        image_key: Hashable,
        image: np.ndarray,
        clicks: Sequence[Click],
        start: int,
        state: StepState | None,
        deadline: float | None = None,
        on_step: StepDone | None = None,
    ) -> list[StepState]:
        """Run the steps for ``clicks[start:]`` one click at a time, from ``state`` (the output after
        ``clicks[:start]``, None when ``start`` is 0). Returns one :class:`StepState` per step run.

        Args:
            deadline: ``time.monotonic()`` by which the model must be free again (None: no limit). Waiting for the
                model counts: :class:`ModelBusy` when it is not free in time; :class:`DeadlineExceeded` when the
                next step would end past it.
            on_step: called with each new state as soon as it exists (the session cache keeps them).
        """
        began = time.monotonic()
        self._acquire(deadline, began)
        states: list[StepState] = []
        try:
            self._hold_image(image_key, image)
            probs, roi = (None, None) if state is None else (state.probs, state.roi)
            for k in range(start, len(clicks)):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and (left <= 0 or (states and self._step_seconds > left)):
                    raise self._stopped(len(states), len(clicks) - start, began)
                step_began = time.monotonic()
                try:
                    step = self.predictor.step(clicks[: k + 1], probs, roi, time_limit=left)
                except StepTimeout as exc:
                    raise DeadlineExceeded(f"{exc}: no answer within the request's {DEADLINE_SETTING}") from None
                self._remember_step_time(time.monotonic() - step_began)
                probs, roi = step.probs, step.roi
                states.append(StepState(np.asarray(probs, dtype=np.float32), _as_roi(roi)))
                if on_step is not None:
                    on_step(k + 1, states[-1])
        finally:
            self.lock.release()
        return states

    def run_boxes(
        self,
        image_key: Hashable,
        image: np.ndarray,
        boxes: Sequence[Box],
        deadline: float | None = None,
        threshold: float = PROB_THRESHOLD,
    ) -> list[BoxMask]:
        """Segment every box of one image (:func:`model.box_segmenter.segment_boxes`: each box's clicks step by
        step, the boxes batched per forward pass where the predictor can) under the model's lock, with the
        deadline of :meth:`run_steps` (:class:`ModelBusy`, :class:`DeadlineExceeded`)."""
        began = time.monotonic()
        self._acquire(deadline, began)
        try:
            self._hold_image(image_key, image)
            return segment_boxes(self.predictor, boxes, threshold, deadline=deadline)
        except StepTimeout as exc:
            raise DeadlineExceeded(f"{exc}: no answer within the request's {DEADLINE_SETTING}") from None
        finally:
            self.lock.release()

    def _acquire(self, deadline: float | None, began: float) -> None:
        if not self.lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - began)):
            raise ModelBusy(
                f"the model is busy with other requests: it was not free within "
                f"{time.monotonic() - began:.1f} s ({DEADLINE_SETTING}); retry the click"
            )

    def _hold_image(self, image_key: Hashable, image: np.ndarray) -> None:
        """The predictor holds ``image`` (``set_image`` only when it held another)."""
        if self._image_key != image_key:
            self._image_key = None  # a failing set_image must not leave a stale key behind
            self.predictor.set_image(image)
            self._image_key = image_key

    def _remember_step_time(self, seconds: float) -> None:
        weight = STEP_TIME_SMOOTHING if self._step_seconds else 1.0
        self._step_seconds = (1 - weight) * self._step_seconds + weight * seconds

    def _stopped(self, done: int, wanted: int, began: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"stopped after {done} of {wanted} new clicks: {time.monotonic() - began:.1f} s of model time, about "
            f"{self._step_seconds:.1f} s per click, would pass the request's deadline ({DEADLINE_SETTING}); the "
            "clicks done are kept, so the next request goes on from there"
        )


def _as_roi(roi) -> Roi | None:
    if roi is None:
        return None
    rmin, rmax, cmin, cmax = (int(v) for v in roi)
    return rmin, rmax, cmin, cmax


class ModelHolder:
    """Which model answers which project; safe from any thread.

    Args:
        configured: builds the configured predictor's :class:`ServedModel` (called again if the pool dropped it);
            its ``key`` must not depend on the build (``configured/<spec>``).
        configured_key: that key.
        load_version: builds the :class:`ServedModel` of a registry version (sha256-checked, smoke-tested).
        pool: the loaded models.
    """

    def __init__(
        self,
        configured: Callable[[], ServedModel],
        configured_key: str,
        load_version: Callable[[VersionRef], ServedModel],
        pool: ModelPool | None = None,
    ) -> None:
        self._configured = configured
        self._configured_key = configured_key
        self._load_version = load_version
        self.pool = pool or ModelPool()
        self._lock = threading.Lock()
        self._state = RegistryState()
        # project -> key of the model it was last served; requests without a project are always expected
        self._last: dict[int | None, str] = {None: configured_key}
        self._configured_version: str | None = None  # known once the configured model was built
        self.rejected: dict[str, str] = {}  # key -> why it is not served

    @classmethod
    def of(cls, predictor: Predictor, version: str | None = None) -> ModelHolder:
        """A holder serving one given predictor (no registry; tests, the CVAT function)."""
        served = ServedModel(predictor, version or predictor.model_version)
        holder = cls(lambda: served, served.key, _no_registry)
        holder.pool.get(served.key, lambda: served)
        holder._configured_version = served.version
        return holder

    def swap(self, predictor: Predictor, version: str | None = None) -> ServedModel:
        """Serve ``predictor`` as the configured model from now on (what requests without a registry version get);
        returns the previous one (still usable by requests holding it)."""
        served = ServedModel(predictor, version or predictor.model_version)
        old = self.current(None) if self._configured_key in self.pool.keys() else served
        self.pool.get(served.key, lambda: served)
        with self._lock:
            self._configured, self._configured_key = (lambda: served), served.key
            self._configured_version = served.version
        return old

    @property
    def state(self) -> RegistryState:
        with self._lock:
            return self._state

    def set_state(self, state: RegistryState) -> dict[int | None, tuple[str, str]]:
        """Serve the registry as the watcher last read it (it has preloaded what the served projects get now).

        Returns ``{project: (previous key, new key)}`` for the served projects whose model changed; they count as
        served by the new one from now on, so a later rejected version falls back to it.
        """
        with self._lock:
            self._state = state
            before = dict(self._last)
        changed = {}
        for project, previous in before.items():
            key = self.wanted(project)[0]
            if key != previous:
                changed[project] = (previous, key)
        with self._lock:
            self._last.update({project: new for project, (_, new) in changed.items()})
        return changed

    def wanted(self, project: int | None) -> tuple[str, VersionRef | None, str]:
        """``(key, ref, why)`` of the model ``project`` should get now (the configured predictor's key and ref
        None when no registry version applies or the wanted one was rejected)."""
        ref, why = self.state.served_for(project)
        if ref is None:
            return self._configured_key, None, why
        if ref.key in self.rejected:
            with self._lock:
                last = self._last.get(project)
            fallback = last if last and last not in self.rejected else self._configured_key
            return (
                fallback,
                None if fallback == self._configured_key else _ref_of(fallback),
                f"{ref.key} was rejected: {self.rejected[ref.key]}",
            )
        return ref.key, ref, why

    def current(self, project: int | None = None) -> ServedModel:
        """The model that answers ``project`` now (loaded on demand)."""
        for _ in range(3):  # a version that fails to load is rejected; then the fallback is asked for
            key, ref, _ = self.wanted(project)
            load: Callable[[], ServedModel] = (
                self._configured if ref is None else functools.partial(self._load_version, ref)
            )
            try:
                served = self.pool.get(key, load)
            except Exception as exc:  # noqa: BLE001 - the project keeps its model, the reason is kept
                if ref is None:
                    raise
                self.reject(key, f"{type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self._last[project] = served.key
                if ref is None:
                    self._configured_version = served.version
            return served
        raise RuntimeError(f"no model could be loaded for project {project}")

    def version_for(self, project: int | None) -> str:
        """The version that answers ``project`` now, without loading it (what /health and /setup report: Label
        Studio waits 1 s and 3 s for them, less than loading a model takes)."""
        return self.version_of(self.wanted(project)[1])

    def version_of(self, ref: VersionRef | None) -> str:
        """The version name of ``ref`` (None: the configured predictor's)."""
        if ref is not None:
            return ref.version
        with self._lock:
            known = self._configured_version
        return known if known is not None else self.current(None).version

    def reject(self, key: str, reason: str) -> None:
        with self._lock:
            self.rejected[key] = reason

    @property
    def version(self) -> str:
        """The version a request that names no project gets."""
        return self.current(None).version

    def active_projects(self) -> list[int | None]:
        with self._lock:
            return list(self._last)

    def served_keys(self) -> dict[int | None, str]:
        """Project -> key of the model it was last served."""
        with self._lock:
            return dict(self._last)


def _no_registry(ref: VersionRef) -> ServedModel:
    raise RuntimeError(f"no registry to load {ref.key} from")


def _ref_of(key: str) -> VersionRef:
    line, _, version = key.partition("/")
    return VersionRef(line, version)
