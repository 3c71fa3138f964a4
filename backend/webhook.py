"""``POST /webhook``: Label Studio's annotation and training events, counted per project and handed to one handler.

Label Studio registers the backend's ``/webhook`` for all actions of the project when the backend is connected, so
events other than the four below are acknowledged and ignored. ``ANNOTATION_CREATED``/``UPDATED`` carry
``{"action", "annotation": {...}, "task": {...}, "project": {...}}``, ``ANNOTATION_DELETED`` carries
``{"action", "annotations": [{"id": ...}], "project": {...}}`` (older versions: ``annotation``), and
``START_TRAINING`` carries ``{"action", "project": {...}}``.

The handler is pluggable (:class:`WebhookDispatcher` ``handler=``): the fine-tune trigger plugs in there; the
default handler only logs. Training never runs inside the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adaptiveclick.labelstudio.errors import BadRequest
from adaptiveclick.labelstudio.protocol import is_id_text, shown

from .projects import ProjectTable

logger = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED")
TRAINING_EVENTS = ANNOTATION_EVENTS + ("START_TRAINING",)


@dataclass(frozen=True)
class WebhookEvent:
    action: str
    project_id: int
    annotation_ids: tuple[int, ...] = ()
    task_id: int | None = None
    label_config: str | None = None
    payload: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ProjectCounts:
    """Annotation events seen for one project since the backend started."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    training_requests: int = 0

    @property
    def annotations(self) -> int:
        """Net new annotations (created - deleted): what a fine-tune trigger compares against its threshold."""
        return max(0, self.created - self.deleted)


def _id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not is_id_text(str(value)):
        raise BadRequest(f"{what} must be an integer id, got {shown(value)}")
    return int(value)


def parse_webhook(body: Any) -> WebhookEvent | None:
    """The event in a webhook body, None for actions the backend does not act on; BadRequest if malformed."""
    if not isinstance(body, dict):
        raise BadRequest("webhook body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise BadRequest("webhook body has no 'action'")
    if action not in TRAINING_EVENTS:
        return None
    project = body.get("project")
    if not isinstance(project, dict) or "id" not in project:
        raise BadRequest(f"{action} webhook has no 'project' object with an 'id'")
    annotation_ids: tuple[int, ...] = ()
    task_id = None
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        annotation = body.get("annotation")
        if not isinstance(annotation, dict) or "id" not in annotation:
            raise BadRequest(f"{action} webhook has no 'annotation' object with an 'id'")
        annotation_ids = (_id(annotation["id"], "annotation.id"),)
        task = body.get("task")
        task_id = _id(task["id"], "task.id") if isinstance(task, dict) and "id" in task else None
    elif action == "ANNOTATION_DELETED":
        items = body.get("annotations", [body["annotation"]] if isinstance(body.get("annotation"), dict) else None)
        if not isinstance(items, list) or not items or not all(isinstance(a, dict) and "id" in a for a in items):
            raise BadRequest("ANNOTATION_DELETED webhook has no 'annotations' list of objects with an 'id'")
        annotation_ids = tuple(_id(a["id"], "annotation id") for a in items)
    label_config = project.get("label_config")
    return WebhookEvent(
        action,
        _id(project["id"], "project.id"),
        annotation_ids,
        task_id,
        label_config if isinstance(label_config, str) else None,
        body,
    )


Handler = Callable[[WebhookEvent, ProjectCounts], Any]


def log_handler(event: WebhookEvent, counts: ProjectCounts) -> dict:
    """Default handler: acknowledge and log (the fine-tune trigger replaces it)."""
    logger.info(
        "webhook event",
        extra={
            "action": event.action,
            "project": event.project_id,
            "annotations": counts.annotations,
            "annotations_created": counts.created,
            "annotations_updated": counts.updated,
            "annotations_deleted": counts.deleted,
        },
    )
    return {"status": "acknowledged"}


class WebhookDispatcher:
    """Counts events per project (thread-safe; the ``max_projects`` most recent projects) and passes each to
    ``handler`` with the updated counts. The route hands it only events of projects the backend knows
    (:class:`backend.projects.KnownProjects`)."""

    def __init__(self, handler: Handler = log_handler, max_projects: int = 1000) -> None:
        self.handler = handler
        self._counts: ProjectTable[ProjectCounts] = ProjectTable(max_projects)
        self._lock = threading.Lock()

    def counts(self, project_id: int) -> ProjectCounts:
        return self._counts.get(project_id, ProjectCounts())

    def all_counts(self) -> dict[int, ProjectCounts]:
        return {p: c for p, c in self._counts.snapshot().items() if p is not None}

    def dispatch(self, event: WebhookEvent) -> Any:
        with self._lock:
            c = self._counts.get(event.project_id, ProjectCounts())
            n = len(event.annotation_ids)
            c = ProjectCounts(
                created=c.created + n * (event.action == "ANNOTATION_CREATED"),
                updated=c.updated + n * (event.action == "ANNOTATION_UPDATED"),
                deleted=c.deleted + n * (event.action == "ANNOTATION_DELETED"),
                training_requests=c.training_requests + (event.action == "START_TRAINING"),
            )
            self._counts.put(event.project_id, c)
        return self.handler(event, c)
