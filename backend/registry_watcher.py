"""Hot swap: follow the model registry's current pointer and swap the served predictor without downtime.

A background thread reads the pointer (one small object) every ``MODEL_REGISTRY_POLL_SECONDS``. When it names a
version other than the one served, the watcher downloads the weights (sha256-checked by the registry), builds the
predictor with the same options as the configured one (device, mode, flip, ...), checks that it answers a click,
and only then swaps it into the :class:`~backend.model_holder.ModelHolder`: requests already running finish on the
old predictor, later ones use the new one. A version that fails any step is rejected (logged, counted) and not
retried until the pointer moves; the old model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from model.loading import load_predictor
from model.predictor import Predictor
from model.spec import PredictorSpec, parse_spec, pinned_spec
from storage.registry import Registry, RegistryError, open_registry

from .model_holder import ModelHolder

logger = logging.getLogger(__name__)

Loader = Callable[[PredictorSpec], Predictor]


def smoke_test(predictor: Predictor) -> None:
    """Refuse a predictor that cannot answer one click with probabilities of the right shape."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    probs = np.asarray(predictor.predict([(48, 64, True)]))
    if probs.shape != image.shape[:2] and probs.shape != (96, 128):
        raise ValueError(f"smoke test: probabilities of shape {probs.shape} for a 96x128 image")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("smoke test: probabilities are not finite values in [0, 1]")


def _prepare_and_check(predictor: Predictor) -> Predictor:
    predictor.set_image(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))
    smoke_test(predictor)
    return predictor


def load_version(registry: Registry, version: str, served_spec: str, loader: Loader = load_predictor) -> Predictor:
    """The predictor of a registry version (sha256-checked), run like the served spec (device, mode, precision,
    ...), after it answered a click on a test image; raises whatever went wrong."""
    info = registry.read_version(version)
    weights = registry.fetch_weights(version)
    spec = pinned_spec(str(weights), info.sha256, version, run_like=parse_spec(served_spec))
    return _prepare_and_check(loader(spec))


def startup_model(
    registry: Registry, served_spec: str, loader: Loader = load_predictor
) -> tuple[Predictor, str | None, tuple[str, BaseException] | None]:
    """What to serve first: the registry's current version when it loads, else the configured predictor, so that no
    request is answered by a model about to be replaced. Returns ``(predictor, registry version or None, (version,
    error) when the current version was refused)``."""
    try:
        pointer = registry.current_pointer()
    except RegistryError as exc:
        logger.warning(
            "registry unreadable at start; serving the configured predictor",
            extra={"registry": registry.uri, "error": str(exc)},
        )
        pointer = None
    version = str(pointer.get("version")) if pointer else None
    if version:
        try:
            return load_version(registry, version, served_spec, loader), version, None
        except Exception as exc:  # the configured predictor serves instead; the watcher records why
            return loader(parse_spec(served_spec)), None, (version, exc)
    return loader(parse_spec(served_spec)), None, None


class RegistryWatcher:
    """Args:
    holder: the served model.
    registry: where fine-tunes publish (a :class:`storage.registry.Registry` or its URI).
    served_spec: the configured predictor spec, whose run options new versions inherit.
    poll_seconds: time between pointer reads.
    loader: builds a predictor from a spec (tests substitute it).
    on_swap / on_reject: callbacks ``(version)`` / ``(version, reason)`` for metrics.
    """

    def __init__(
        self,
        holder: ModelHolder,
        registry: Registry | str,
        served_spec: str,
        poll_seconds: float = 10.0,
        loader: Loader = load_predictor,
        on_swap: Callable[[str], None] | None = None,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.holder = holder
        self.registry = open_registry(registry) if isinstance(registry, str) else registry
        self.served_spec = served_spec
        self.poll_seconds = poll_seconds
        self.loader = loader
        self.on_swap = on_swap or (lambda version: None)
        self.on_reject = on_reject or (lambda version, reason: None)
        self.rejected: dict[str, str] = {}  # version -> why it was not served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()

    def poll_once(self) -> str:
        """Check the pointer once: ``"empty"``, ``"unchanged"``, ``"rejected"`` or ``"swapped"``."""
        with self._poll_lock:
            try:
                pointer = self.registry.current_pointer()
            except RegistryError as exc:
                logger.warning("registry unreadable", extra={"registry": self.registry.uri, "error": str(exc)})
                return "unchanged"
            if not pointer:
                return "empty"
            version = str(pointer.get("version"))
            if version == self.holder.version or version in self.rejected:
                return "unchanged"
            try:
                predictor = load_version(self.registry, version, self.served_spec, self.loader)
            except Exception as exc:  # any failure: keep serving the old model, remember why
                self.reject(version, exc, serving=self.holder.version)
                return "rejected"
            old = self.holder.swap(predictor, version)
            logger.info(
                "model swapped", extra={"version": version, "previous": old.version, "registry": self.registry.uri}
            )
            self.on_swap(version)
            return "swapped"

    def reject(self, version: str, exc: BaseException, serving: str) -> None:
        """Remember (and log, and count) why ``version`` is not served; it is not retried until the pointer moves."""
        reason = f"{type(exc).__name__}: {exc}"
        self.rejected[version] = reason
        logger.error(
            "registry version rejected; the current model keeps serving",
            extra={"version": version, "error": reason, "serving": serving},
        )
        self.on_reject(version, reason)

    def start(self) -> RegistryWatcher:
        """Poll in a daemon thread (first poll right away, so a restart picks up the current version)."""
        if self._thread is None and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # never let the watcher die: log and try again next period
                logger.exception("registry watcher error")
            self._stop.wait(self.poll_seconds)
