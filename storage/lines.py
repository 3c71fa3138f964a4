"""Which model serves a Label Studio project: model lines, pins, and the resolution rule.

Every project is answered by the first of:

1. its pin (``project-<id>/pin.json``: a rollback to a chosen version, of its own line or of the base line);
2. its own line's current version (``project-<id>/current.json``: its fine-tunes);
3. the base line's pin, then the base line's current version (the registry's root, shared by every project);
4. nothing in the registry: the configured predictor (``ADAPTIVECLICK_PREDICTOR``).

:func:`read_state` reads every pointer and pin once (a poll); :meth:`RegistryState.served_for` then resolves any
project without touching storage. Pins live in the registry, so they survive restarts and every replica of the
backend sees the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .registry import BASE_LINE, Registry, RegistryError, check_version_name, project_line


@dataclass(frozen=True)
class VersionRef:
    """A published version of one line; ``key`` names it uniquely in the registry (and in the backend's caches)."""

    line: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.line}/{self.version}"


@dataclass(frozen=True)
class Pin:
    ref: VersionRef
    source: str  # "api" (POST /versions/<project>) or "extra_params" (Label Studio's Connect Model dialog)
    pinned_at: str = ""


@dataclass(frozen=True)
class LineState:
    current: str | None = None
    pin: Pin | None = None


@dataclass(frozen=True)
class RegistryState:
    """Every line's pointer and pin at one poll."""

    base: LineState = field(default_factory=LineState)
    projects: dict[int, LineState] = field(default_factory=dict)

    def served_for(self, project: int | None) -> tuple[VersionRef | None, str]:
        """``(version, why)`` for ``project`` (None: a request that names no project); ``(None, why)`` means the
        configured predictor."""
        own = self.projects.get(project) if project is not None else None
        if own is not None and own.pin is not None:
            return own.pin.ref, f"pinned ({own.pin.source})"
        if own is not None and own.current is not None:
            return VersionRef(project_line(project), own.current), "the project's line"  # type: ignore[arg-type]
        if self.base.pin is not None:
            return self.base.pin.ref, f"base line pinned ({self.base.pin.source})"
        if self.base.current is not None:
            return VersionRef(BASE_LINE, self.base.current), "the base line"
        return None, "no registry version: the configured predictor"


def _line_state(line: Registry) -> LineState:
    pointer = line.current_pointer()
    current = pointer.get("version") if pointer else None
    if current is not None and not isinstance(current, str):
        raise RegistryError(f"{line.uri}: current.json names no version")
    return LineState(current, _pin_of(line))


def _pin_of(line: Registry) -> Pin | None:
    record = line.pin_record()
    if record is None:
        return None
    return Pin(
        VersionRef(record["line"], record["version"]), str(record.get("source")), str(record.get("pinned_at", ""))
    )


def read_pin(registry: Registry, project: int | None) -> Pin | None:
    """The pin of ``project``'s line (None: the base line's), read now (one small object)."""
    return _pin_of(registry.line(BASE_LINE if project is None else project_line(project)))


def read_state(registry: Registry) -> RegistryState:
    """Read the base line and every project line (one listing, then a pointer and a pin per line)."""
    return RegistryState(
        _line_state(registry),
        {project: _line_state(registry.line(project_line(project))) for project in registry.project_lines()},
    )


def find_version(registry: Registry, version: str, project: int | None = None) -> VersionRef:
    """The line holding ``version``: the project's own line first, then the base line (RegistryError if
    neither has it). ``"base/<version>"`` names a base-line version explicitly."""
    explicit_base = version.startswith(f"{BASE_LINE}/")
    name = check_version_name(version.split("/", 1)[1] if explicit_base else version)
    lines = ([] if explicit_base or project is None else [project_line(project)]) + [BASE_LINE]
    for line in lines:
        try:
            registry.line(line).read_version(name)
        except RegistryError:
            continue
        return VersionRef(line, name)
    where = " or ".join(lines)
    raise RegistryError(f"no version {name!r} in the {where} line of {registry.uri}")


def pin(registry: Registry, project: int | None, version: str | None, source: str) -> VersionRef | None:
    """Pin ``project`` (None: the base line) to ``version`` (None: unpin); returns what it is pinned to."""
    line = registry.line(BASE_LINE if project is None else project_line(project))
    if version is None:
        line.set_pin(None, source=source)
        return None
    ref = find_version(registry, version, project)
    line.set_pin(ref.version, ref.line, source)
    return ref
