"""Model versions as Label Studio sees them: the listing behind ``GET /versions``, and pinning (rollback).

Label Studio 1.23.2 asks ``GET <connection URL>/versions`` with no body and no query, so the connection URL must
say which project it is for: connect a project as ``http://backend:9090/projects/<id>`` (every route accepts that
prefix, see :mod:`backend.projects`) and ``/versions`` lists that project's line; plain ``/versions`` lists the
base line. Label Studio reads ``"versions"`` (names); ``"details"`` carries each version's creation time, parent,
gate metrics (NoC@85/90 of what it was compared with, "before", and its own, "after"), whether it is the line's
current, pinned or served version, whether it can be pinned, and where it comes from (``"source"``).

The list always holds what answers: when no registry version serves the project (a fresh start, an empty line, a
rejected version), the configured predictor (``ADAPTIVECLICK_PREDICTOR``) answers, and is listed as such
(``"source": "configured"``, its spec without secrets, when this process loaded it), so Label Studio shows the
version that produced the masks.

A pin (``extra_params`` ``{"model_version": "..."}`` in the Connect Model dialog, sent with ``/setup``, or
``POST /versions/<project>``) is written to the registry, so it survives restarts and every replica sees it. Through
the API the version is loaded and answers a test click before the pin is written, so such a pin never points at a
broken version; ``/setup`` must answer within Label Studio's 3 s, so there the pin is written at once and the
version loads in the background (one that fails to load is rejected, and the project keeps the model it had).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from adaptiveclick.labelstudio.errors import BadRequest, RequestError
from adaptiveclick.labelstudio.protocol import shown
from adaptiveclick.model.spec import parse_spec
from adaptiveclick.storage.lines import find_version, pin, read_pin, read_state
from adaptiveclick.storage.logs import redact_value
from adaptiveclick.storage.registry import BASE_LINE, Registry, RegistryError, VersionInfo, project_line

from .model_holder import ModelHolder
from .registry_watcher import RegistryWatcher
from .served_model import CONFIGURED_LINE

logger = logging.getLogger(__name__)

SOURCE_API = "api"
SOURCE_EXTRA_PARAMS = "extra_params"
#: where a listed version comes from: a registry line, or the configured predictor (ADAPTIVECLICK_PREDICTOR)
SOURCE_REGISTRY = "registry"
SOURCE_CONFIGURED = "configured"


def _gate(info: VersionInfo) -> dict[str, Any]:
    before = (info.metrics.get("gate") or {}).get("current") or {}
    return {
        "noc85_before": before.get("noc85"),
        "noc90_before": before.get("noc90"),
        "noc85_after": info.metrics.get("noc85"),
        "noc90_after": info.metrics.get("noc90"),
        # "starting weights: <spec>" may name a URL: shown as the logs show it (no query, no userinfo)
        "compared_with": redact_value((info.metrics.get("gate") or {}).get("compared_with")),
    }


def version_listing(
    registry: Registry, holder: ModelHolder, project: int | None, configured_spec: str
) -> dict[str, Any]:
    """The reply of ``GET /versions`` for ``project`` (None: the base line); ``configured_spec``: the configured
    predictor's spec."""
    try:
        state = read_state(registry)
        lines = ([project_line(project)] if project is not None else []) + [BASE_LINE]
        infos = [info for line in lines for info in registry.line(line).list_versions()]
    except RegistryError as exc:
        raise RequestError(f"the model registry cannot be read: {exc}", 502) from None
    _, served, why = holder.wanted(project)  # what answers now (a rejected version's fallback included)
    own = state.projects.get(project) if project is not None else state.base
    pinned = own.pin.ref if own is not None and own.pin is not None else None
    currents = {BASE_LINE: state.base.current}
    if project is not None:
        currents[project_line(project)] = own.current if own is not None else None

    def name(info: VersionInfo) -> str:  # base versions listed for a project say so: "base/<version>"
        return info.version if project is None or info.line != BASE_LINE else f"{BASE_LINE}/{info.version}"

    details = [
        {
            "version": name(info),
            "source": SOURCE_REGISTRY,
            "line": info.line,
            "created": info.created_at,
            "parent": None if info.parent is None else f"{info.parent_line or BASE_LINE}/{info.parent}",
            **_gate(info),
            "current": currents.get(info.line) == info.version,
            "pinned": pinned is not None and (pinned.line, pinned.version) == (info.line, info.version),
            "served": served is not None and (served.line, served.version) == (info.line, info.version),
            "pinnable": f"{info.line}/{info.version}" not in holder.rejected,
        }
        for info in infos
    ]
    if served is None:  # no registry version answers: the configured predictor does, and is listed
        details.append(_configured(holder, configured_spec))
    return {
        "versions": [d["version"] for d in details],
        "project": project,
        "line": BASE_LINE if project is None else project_line(project),
        "served": {"version": holder.version_of(served), "why": why},
        "pinned": None if pinned is None else pinned.key,
        "details": details,
    }


def _configured(holder: ModelHolder, spec: str) -> dict[str, Any]:
    """The configured predictor as a listed version: not in the registry, so it has no parent, gate or pin."""
    loaded = holder.configured_model()
    created = None if loaded is None else datetime.fromtimestamp(loaded.loaded_at, timezone.utc)
    return {
        "version": holder.version_of(None),
        "source": SOURCE_CONFIGURED,
        "line": CONFIGURED_LINE,
        "predictor": parse_spec(spec).public,
        "created": None if created is None else created.isoformat("T", "seconds"),
        "parent": None,
        "noc85_before": None,
        "noc90_before": None,
        "noc85_after": None,
        "noc90_after": None,
        "compared_with": None,
        "current": True,
        "pinned": False,
        "served": True,
        "pinnable": False,
    }


def pin_project(
    registry: Registry,
    watcher: RegistryWatcher,
    project: int | None,
    version: str | None,
    source: str,
    load_first: bool = True,
) -> dict[str, Any]:
    """Pin ``project`` to ``version`` (None: unpin) and apply it here (the other replicas within their poll).

    Args:
        load_first: load the version and answer a test click before the pin is written (``POST /versions``), so
            a pin never points at a broken version. Without it (``/setup``, which Label Studio gives 3 s) the pin
            is written at once and the version loads in the background; one that fails to load is rejected there
            and the project keeps its model.
    """
    ref = _pinnable(registry, watcher, project, version)
    if ref is not None and load_first:
        try:
            watcher.holder.pool.get(ref.key, lambda: watcher.build(ref))
        except Exception as exc:  # noqa: BLE001 - a version that does not load is never pinned
            watcher.reject(ref, exc)
            raise RequestError(f"cannot pin {ref.key}: it does not load ({type(exc).__name__}: {exc})", 422) from None
    try:
        pinned = pin(registry, project, version, source)
        served = watcher.holder.version_of(ref if ref is not None else read_state(registry).served_for(project)[0])
    except RegistryError as exc:
        raise RequestError(f"the pin cannot be written to the registry: {exc}", 502) from None
    if load_first:
        watcher.poll_once()
    else:
        watcher.poll_in_background()
    logger.info(
        "model pinned" if pinned else "model unpinned",
        extra={"project": project, "model": pinned.key if pinned else None, "source": source},
    )
    return {"project": project, "pinned": pinned.key if pinned else None, "served": served}


def _pinnable(registry: Registry, watcher: RegistryWatcher, project: int | None, version: str | None):
    """The registry version ``version`` names for ``project`` (None for an unpin); 400 if there is none, 422 if
    it was rejected."""
    if version is None:
        return None
    try:
        ref = find_version(registry, version, project)
    except (RegistryError, ValueError) as exc:
        raise BadRequest(f"cannot pin {shown(version)}: {exc}") from None
    if ref.key in watcher.holder.rejected:
        raise RequestError(f"cannot pin {ref.key}: it was rejected ({watcher.holder.rejected[ref.key]})", 422)
    return ref


def apply_setup_pin(
    registry: Registry,
    watcher: RegistryWatcher,
    project: int | None,
    version: str | None,
    unpin: bool,
    authorize: Callable[[], None] = lambda: None,
) -> str:
    """What ``/setup``'s ``extra_params`` asks: a pin, an unpin, or (no model_version in it) dropping a pin that
    came from ``extra_params`` while leaving one made through the API. Returns the version the project will be
    answered by, without waiting for it to load. ``authorize`` is called before anything is written (it raises
    when the caller may not change what is served)."""
    try:
        current_pin = read_pin(registry, project)  # Label Studio calls /setup often: only a change is written
    except RegistryError as exc:
        raise RequestError(f"the model registry cannot be read: {exc}", 502) from None
    if version is not None:
        authorize()  # a pin needs the right to change what is served, whatever it names
        ref = _pinnable(registry, watcher, project, version)
        if current_pin is not None and current_pin.ref == ref:
            return watcher.holder.version_of(ref)
        return pin_project(registry, watcher, project, version, SOURCE_EXTRA_PARAMS, load_first=False)["served"]
    if current_pin is not None and (unpin or current_pin.source == SOURCE_EXTRA_PARAMS):
        authorize()
        return pin_project(registry, watcher, project, None, SOURCE_EXTRA_PARAMS, load_first=False)["served"]
    return watcher.holder.version_for(project)
