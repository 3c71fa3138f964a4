"""Fine-tunes as Kubernetes Jobs (``ADAPTIVECLICK_TRAINING_RUNNER=kubernetes``), so training never takes a serving GPU.

Each start creates one Job in the backend's own namespace from the template file
(``ADAPTIVECLICK_TRAINING_JOB_TEMPLATE``: deploy/kubernetes/overlays/gpu/finetune-job.yaml, mounted from a ConfigMap
and read at every start). The backend names it ``adaptiveclick-finetune-p<project>-<UTC time>-<4 hex>``, labels it
with the project (``adaptiveclick.io/project``) and sets ``ADAPTIVECLICK_FINETUNE_ARGS`` in its containers to the
arguments a local fine-tune would get (``--ls-project``, ``--init``, ``FINETUNE_ARGS``). It talks to the API with
the official client and the pod's service account (in-cluster config: the token, CA and namespace files Kubernetes
mounts), and makes two calls only: list the project's Jobs (at most one runs at a time, across replicas too) and
create one. The Role in the overlay allows exactly that, on Jobs in its namespace.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .jobs import JobRunning, JobStatus

logger = logging.getLogger(__name__)

#: where Kubernetes mounts a pod's service account (token, ca.crt, namespace)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PROJECT_LABEL = "adaptiveclick.io/project"
COMPONENT_LABEL = "app.kubernetes.io/component"
ARGS_ENV = "ADAPTIVECLICK_FINETUNE_ARGS"
NAME_PREFIX = "adaptiveclick-finetune-p"


class ClusterJobError(RuntimeError):
    """The Kubernetes API refused or could not be reached; the message says what it answered."""


class KubernetesJobs:
    """Creates and reports the fine-tune Jobs of the backend's namespace (see the module docstring).

    Args:
        template: the Job manifest file each fine-tune is created from.
        api: a ``kubernetes.client.BatchV1Api``.
        namespace: where the Jobs go (the backend's own).
    """

    def __init__(self, template: Path, api: Any, namespace: str) -> None:
        self.template = Path(template)
        self.api = api
        self.namespace = namespace
        self.read_template()  # a missing or broken template stops the start, not the first START_TRAINING

    @classmethod
    def in_cluster(
        cls, template: Path, account: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> KubernetesJobs:
        """Jobs created with the pod's service account: ``KUBERNETES_SERVICE_HOST``/``PORT`` and the files
        Kubernetes mounts in ``account`` (default :data:`SERVICE_ACCOUNT`)."""
        from kubernetes import client
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.incluster_config import InClusterConfigLoader

        account = account or SERVICE_ACCOUNT
        configuration = client.Configuration()
        try:
            InClusterConfigLoader(
                token_filename=str(account / "token"),
                cert_filename=str(account / "ca.crt"),
                environ=dict(os.environ if environ is None else environ),
            ).load_and_set(configuration)
            namespace = (account / "namespace").read_text().strip()
        except (ConfigException, OSError) as exc:
            raise ClusterJobError(
                f"ADAPTIVECLICK_TRAINING_RUNNER=kubernetes needs the pod's service account (a token mounted at "
                f"{account}, KUBERNETES_SERVICE_HOST): {exc}"
            ) from None
        return cls(template, client.BatchV1Api(client.ApiClient(configuration)), namespace)

    # -- the Job ---------------------------------------------------------------------------------------------------

    def read_template(self) -> dict:
        try:
            job = yaml.safe_load(self.template.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ClusterJobError(f"ADAPTIVECLICK_TRAINING_JOB_TEMPLATE {self.template}: {exc}") from None
        if not isinstance(job, dict) or job.get("kind") != "Job" or not _containers(job):
            raise ClusterJobError(f"ADAPTIVECLICK_TRAINING_JOB_TEMPLATE {self.template} is not a Job with containers")
        return job

    def job_for(self, project: int, arguments: list[str], reason: str) -> dict:
        """The Job for one fine-tune of ``project``: the template, named and labelled, with its arguments."""
        job = copy.deepcopy(self.read_template())
        metadata = job.setdefault("metadata", {})
        metadata.pop("generateName", None)
        # unique even for two starts in one second; at most 61 characters, so <name>-<index> is a DNS label
        metadata["name"] = f"{NAME_PREFIX}{project}-{datetime.now(timezone.utc):%y%m%d%H%M%S}-{secrets.token_hex(2)}"
        metadata["namespace"] = self.namespace
        metadata.setdefault("labels", {}).update({PROJECT_LABEL: str(project), COMPONENT_LABEL: "finetune"})
        metadata.setdefault("annotations", {})["adaptiveclick.io/reason"] = reason
        pod_labels = job["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
        pod_labels[PROJECT_LABEL] = str(project)
        for container in _containers(job):
            env = [item for item in container.get("env", []) if item.get("name") != ARGS_ENV]
            container["env"] = [*env, {"name": ARGS_ENV, "value": shlex.join(arguments)}]
        return job

    # -- the two API calls -----------------------------------------------------------------------------------------

    def _list(self, selector: str) -> list[dict]:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.api.list_namespaced_job(self.namespace, label_selector=selector)
        except ApiException as exc:
            raise ClusterJobError(_api_error("listing the fine-tune Jobs", exc)) from None
        except OSError as exc:  # urllib3's errors are OSErrors: the API cannot be reached
            raise ClusterJobError(f"listing the fine-tune Jobs: the Kubernetes API cannot be reached: {exc}") from None
        items = self.api.api_client.sanitize_for_serialization(found).get("items") or []
        return sorted(items, key=lambda job: job["metadata"].get("creationTimestamp") or "")

    def _create(self, job: dict) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            created = self.api.create_namespaced_job(self.namespace, job)
        except ApiException as exc:
            raise ClusterJobError(_api_error(f"creating the Job {job['metadata']['name']}", exc)) from None
        except OSError as exc:
            raise ClusterJobError(f"creating the Job: the Kubernetes API cannot be reached: {exc}") from None
        except ValueError as exc:  # the client's own checks of the body (quantities as strings, ...)
            raise ClusterJobError(f"{self.template} does not make a valid Job: {exc}") from None
        return self.api.api_client.sanitize_for_serialization(created)

    # -- what the launcher asks ------------------------------------------------------------------------------------

    def start(self, project: int, arguments: list[str], reason: str) -> JobStatus:
        """Create the project's fine-tune Job (JobRunning while one of its Jobs has not ended)."""
        running = [job for job in self._list(_selector(project)) if _state(job) == "running"]
        if running:
            raise JobRunning(
                f"a fine-tune of project {project} is already running (Job {running[-1]['metadata']['name']})"
            )
        created = self._create(self.job_for(project, arguments, reason))
        logger.info(
            "fine-tune Job created",
            extra={
                "project": project,
                "reason": reason,
                "job": created["metadata"]["name"],
                "namespace": self.namespace,
            },
        )
        return _status(project, created)

    def status(self, project: int) -> JobStatus:
        jobs = self._list(_selector(project))
        return _status(project, jobs[-1]) if jobs else JobStatus(project, "none", kind="finetune")

    def projects(self) -> list[int]:
        labels = (job["metadata"].get("labels", {}).get(PROJECT_LABEL, "") for job in self._list(_selector(None)))
        return sorted({int(value) for value in labels if value.isdigit()})


def _containers(job: dict) -> list[dict]:
    return (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []


def _selector(project: int | None) -> str:
    selector = f"{COMPONENT_LABEL}=finetune,{PROJECT_LABEL}"
    return selector if project is None else f"{selector}={project}"


def _state(job: dict) -> str:
    """``running`` until the Job has a Complete or Failed condition."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return "succeeded" if condition["type"] == "Complete" else "failed"
    return "running"


def _status(project: int, job: dict) -> JobStatus:
    metadata, status = job["metadata"], job.get("status") or {}
    progress = {key: status[key] for key in ("active", "ready", "succeeded", "failed") if status.get(key) is not None}
    return JobStatus(
        project,
        _state(job),
        started_at=metadata.get("creationTimestamp"),
        reason=(metadata.get("annotations") or {}).get("adaptiveclick.io/reason"),
        progress={"pods": progress} if progress else None,
        kind="finetune",
        cluster_job=f"{metadata.get('namespace')}/{metadata['name']}",
    )


def _api_error(doing: str, exc: Any) -> str:
    """What the API answered, in one line (its Status message when there is one)."""
    import json

    try:
        message = json.loads(exc.body or "{}").get("message")
    except ValueError:
        message = None
    return f"{doing}: the Kubernetes API answered {exc.status} {exc.reason}: {message or exc.body or ''}".strip()
