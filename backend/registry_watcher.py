"""Hot swap: follow the model registry's lines and pins, and swap each project's model without downtime.

A background thread reads every line's pointer and pin (:func:`storage.lines.read_state`: one listing and two small
objects per line) every ``MODEL_REGISTRY_POLL_SECONDS``. Before the new state is handed to the
:class:`~backend.model_holder.ModelHolder`, every project that is being served and would get another version has
that version loaded: the weights downloaded (sha256-checked by the registry), the predictor built with the same
options as the configured one (device, mode, precision, ...) and checked on one click. Requests already running
finish on the old model, later ones get the new one. A version that fails any step is rejected (logged, counted)
and not retried; its project keeps the model it had. Projects that are not being served load their version when
their first request comes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

import numpy as np

from adaptiveclick.model.loading import load_predictor
from adaptiveclick.model.predictor import Predictor
from adaptiveclick.model.spec import PredictorSpec, parse_spec, pinned_spec
from adaptiveclick.storage.lines import RegistryState, VersionRef, read_state
from adaptiveclick.storage.registry import Registry, RegistryError, open_registry

from .model_holder import ModelHolder
from .model_pool import ModelPool, PoolLimit
from .served_model import ServedModel

logger = logging.getLogger(__name__)

Loader = Callable[[PredictorSpec], Predictor]


def smoke_test(predictor: Predictor) -> None:
    """Refuse a predictor that cannot answer one click with probabilities of the right shape."""
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    probs = np.asarray(predictor.predict([(48, 64, True)]))
    if probs.shape != (96, 128):
        raise ValueError(f"smoke test: probabilities of shape {probs.shape} for a 96x128 image")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("smoke test: probabilities are not finite values in [0, 1]")


def load_version(registry: Registry, ref: VersionRef, served_spec: str, loader: Loader = load_predictor) -> ServedModel:
    """The model of a registry version (sha256-checked), run like the served spec (device, mode, precision, ...),
    after it answered a click on a test image; raises whatever went wrong."""
    line = registry.line(ref.line)
    info = line.read_version(ref.version)
    weights = line.fetch_weights(ref.version)
    predictor = loader(pinned_spec(str(weights), info.sha256, ref.version, run_like=parse_spec(served_spec)))
    smoke_test(predictor)
    return ServedModel(predictor, ref.version, ref.line, predictor.memory_bytes())


class RegistryWatcher:
    """Args:
    holder: the served models.
    registry: where fine-tunes publish (a :class:`storage.registry.Registry` or its URI).
    served_spec: the configured predictor spec, whose run options registry versions inherit.
    poll_seconds: time between polls.
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()

    @classmethod
    def for_predictor(
        cls,
        predictor: Predictor,
        registry: Registry | str,
        served_spec: str,
        poll_seconds: float = 10.0,
        limit: PoolLimit | None = None,
        **options,
    ) -> RegistryWatcher:
        """A watcher over a new :class:`ModelHolder` whose configured model is ``predictor``."""
        configured = ServedModel(predictor, predictor.model_version)
        holder = ModelHolder(
            lambda: configured, configured.key, lambda ref: watcher.build(ref), ModelPool(limit or PoolLimit())
        )
        watcher = cls(holder, registry, served_spec, poll_seconds, **options)
        return watcher

    @property
    def rejected(self) -> dict[str, str]:
        """``line/version`` -> why it is not served."""
        return self.holder.rejected

    def build(self, ref: VersionRef) -> ServedModel:
        return load_version(self.registry, ref, self.served_spec, self.loader)

    def poll_once(self) -> str:
        """Read the registry once and apply it: ``"empty"``, ``"unchanged"``, ``"rejected"`` or ``"swapped"``."""
        with self._poll_lock:
            try:
                state = read_state(self.registry)
            except (RegistryError, ValueError) as exc:
                logger.warning(
                    "registry unreadable; the served models stay",
                    extra={"registry": self.registry.uri, "error": str(exc)},
                )
                return "unchanged"
            rejected = self._prepare(state, self.holder.served_keys())
            changed = self.holder.set_state(state)
            for project, (previous, key) in changed.items():
                logger.info(
                    "model swapped",
                    extra={"project": project, "model": key, "previous": previous, "registry": self.registry.uri},
                )
                self.on_swap(key.partition("/")[2])
            if rejected:
                return "rejected"
            if changed:
                return "swapped"
            empty = state.base.current is None and state.base.pin is None and not state.projects
            return "empty" if empty else "unchanged"

    def _prepare(self, state: RegistryState, served: dict[int | None, str]) -> bool:
        """Load what the served projects will get under ``state``; True when a version was rejected."""
        rejected = False
        wanted = {ref for ref, _ in (state.served_for(p) for p in served) if ref is not None}
        for ref in sorted(wanted, key=lambda r: r.key):
            if ref.key in self.holder.rejected or self.holder.pool.peek(ref.key) is not None:
                continue
            try:
                self.holder.pool.get(ref.key, functools.partial(self.build, ref))
            except Exception as exc:  # any failure: the projects keep their models, the reason is kept
                self.reject(ref, exc)
                rejected = True
        return rejected

    def reject(self, ref: VersionRef, exc: BaseException) -> None:
        """Remember (and log, and count) why ``ref`` is not served; it is not retried."""
        reason = f"{type(exc).__name__}: {exc}"
        self.holder.reject(ref.key, reason)
        logger.error(
            "registry version rejected; the served models stay",
            extra={"model": ref.key, "error": reason, "registry": self.registry.uri},
        )
        self.on_reject(ref.key, reason)

    def poll_in_background(self) -> None:
        """Poll now in a thread of its own (after a pin: the pinned version loads without holding the request)."""
        threading.Thread(target=self._poll_logged, name="registry-poll", daemon=True).start()

    def _poll_logged(self) -> None:
        try:
            self.poll_once()
        except Exception:  # never let a poll error escape a thread unseen
            logger.exception("registry watcher error")

    def start(self) -> RegistryWatcher:
        """Poll in a daemon thread."""
        if self._thread is None and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._poll_logged()  # never lets the watcher die: logs and tries again next period
