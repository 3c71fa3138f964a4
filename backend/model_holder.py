"""The served models behind a small thread-safe holder, one per Label Studio project, ready for hot swaps.

Each request takes its project's :class:`ServedModel` once (:meth:`ModelHolder.current`) and uses it to the end,
so a swap never changes the model under a running request: in-flight requests finish on the old model, new ones
get the new one, and every response names the version that produced it. Which version a project gets is the
registry's (:mod:`storage.lines`: its pin, its line, the base line) or, with no registry version, the configured
predictor; the models themselves are loaded on demand into a :class:`~backend.model_pool.ModelPool`. A version
that fails to load is rejected (remembered with its reason) and the project keeps the model it had. How one model
is used by a request (its lock, the image it holds, the deadline) is :mod:`backend.served_model`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from adaptiveclick.model.predictor import Predictor
from adaptiveclick.storage.lines import RegistryState, VersionRef

from .model_pool import ModelPool
from .projects import ProjectTable
from .served_model import ServedModel


class ModelHolder:
    """Which model answers which project; safe from any thread.

    Args:
        configured: builds the configured predictor's :class:`ServedModel` (called again if the pool dropped it);
            its ``key`` must not depend on the build (``configured/spec-<hash of the spec>``).
        configured_key: that key.
        load_version: builds the :class:`ServedModel` of a registry version (sha256-checked, smoke-tested).
        pool: the loaded models.
        known: whether a project's last-served model is remembered (:class:`backend.projects.KnownProjects`);
            at most ``max_projects`` of them are, least recently served dropped first.
    """

    def __init__(
        self,
        configured: Callable[[], ServedModel],
        configured_key: str,
        load_version: Callable[[VersionRef], ServedModel],
        pool: ModelPool | None = None,
        known: Callable[[int], bool] = lambda project: True,
        max_projects: int = 1000,
    ) -> None:
        self._configured = configured
        self._configured_key = configured_key
        self._load_version = load_version
        self.pool = pool or ModelPool()
        self._known = known
        self._lock = threading.Lock()
        self._state = RegistryState()
        # project -> key of the model it was last served; requests without a project are always expected
        self._last: ProjectTable[str] = ProjectTable(max_projects + 1)
        self._last.put(None, configured_key)
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
        before = self._last.snapshot()
        changed = {}
        for project, previous in before.items():
            key = self.wanted(project)[0]
            if key != previous:
                changed[project] = (previous, key)
        for project, (_, new) in changed.items():
            self._last.put(project, new)
        return changed

    def wanted(self, project: int | None) -> tuple[str, VersionRef | None, str]:
        """``(key, ref, why)`` of the model ``project`` should get now (the configured predictor's key and ref
        None when no registry version applies or the wanted one was rejected)."""
        ref, why = self.state.served_for(project)
        if ref is None:
            return self._configured_key, None, why
        if ref.key in self.rejected:
            last = self._last.get(project, None)
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
            if project is None or self._known(project):
                self._last.put(project, served.key)
            if ref is None:
                with self._lock:
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

    def configured_model(self) -> ServedModel | None:
        """The configured predictor's model if it is loaded (it is loaded at start; this never loads it)."""
        with self._lock:
            key = self._configured_key
        return self.pool.peek(key)

    def display_key(self, key: str) -> str:
        """``key`` as ``/jobs`` and ``/metrics`` show it: the configured predictor's as ``configured/<its model
        version>`` once it is known (its key holds a hash of the spec, never the spec)."""
        with self._lock:
            if key == self._configured_key and self._configured_version is not None:
                return f"{key.partition('/')[0]}/{self._configured_version}"
        return key

    def reject(self, key: str, reason: str) -> None:
        with self._lock:
            self.rejected[key] = reason

    @property
    def version(self) -> str:
        """The version a request that names no project gets."""
        return self.current(None).version

    def active_projects(self) -> list[int | None]:
        return list(self._last.snapshot())

    def served_keys(self) -> dict[int | None, str]:
        """Project -> key of the model it was last served (known projects only, see ``known``)."""
        return self._last.snapshot()


def _no_registry(ref: VersionRef) -> ServedModel:
    raise RuntimeError(f"no registry to load {ref.key} from")


def _ref_of(key: str) -> VersionRef:
    line, _, version = key.partition("/")
    return VersionRef(line, version)
