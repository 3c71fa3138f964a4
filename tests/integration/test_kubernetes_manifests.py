"""deploy/kubernetes, checked offline: what the base and both overlays build (tests/kustomize_lite.py, the same as
``kubectl kustomize`` wherever kubectl is installed) and the Job templates validate against the Kubernetes schemas
that kubernetes-validate bundles (strict: no unknown field); checkov finds nothing that is not skipped with a reason
on the resource; and the manifests agree with the code and with each other (settings, paths, the image's user and
folders, the project URL pattern, shard and node counts).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_deploy_files import dockerfile_instructions, final_env, settings_variables, stages

from adaptiveclick.backend.projects import PREFIX
from adaptiveclick.backend.settings import DEFAULT_JOB_TEMPLATE

from conftest import REPO
from kustomize_lite import build

KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/cpu", "overlays/gpu")
JOB_TEMPLATES = ("overlays/gpu/finetune-job.yaml", "overlays/gpu/annotate-job.yaml")
KUBERNETES_VERSION = "1.32"  # the oldest release the manifests are checked against (kubectl of 2025)
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
#: the checkov checks skipped on purpose, each with its reason on the resources (checkov.io/skipN annotations)
SKIPPED_ON_PURPOSE = {"CKV_K8S_11", "CKV_K8S_35", "CKV_K8S_38", "CKV_K8S_43"}


def built(name: str) -> list[dict]:
    return build(KUBERNETES / name)


def by_kind(resources: list[dict], kind: str, name: str | None = None) -> dict:
    found = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [r["metadata"]["name"] for r in found])
    return found[0]


def job_template(name: str) -> dict:
    """A Job template with the name ``kubectl create`` (generateName) or the backend would give it."""
    job = yaml.safe_load((KUBERNETES / name).read_text())
    job["metadata"]["name"] = job["metadata"]["generateName"] + "x1"
    return job


def container(resource: dict, name: str | None = None) -> dict:
    containers = resource["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_what_kubectl_builds_is_what_is_checked(name):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the renderer's output is checked on its own")
    out = subprocess.run(["kubectl", "kustomize", str(KUBERNETES / name)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    mine = {(d["kind"], d["metadata"]["name"]): d for d in built(name)}
    assert mine == theirs


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_built_resource_validates(name):
    resources = built(name)
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    assert all(r["metadata"].get("namespace") == "adaptiveclick" for r in resources if r["kind"] != "Namespace")


@pytest.mark.parametrize("name", JOB_TEMPLATES)
def test_job_templates_validate(name):
    kubernetes_validate.validate(job_template(name), KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_refused():
    """The validation above can fail: an unknown field and a wrong type are caught."""
    job = job_template(JOB_TEMPLATES[0])
    job["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    job = job_template(JOB_TEMPLATES[0])
    job["spec"]["completions"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_checkov_finds_nothing_left_unexplained(tmp_path):
    if not CHECKOV.exists():
        pytest.fail("checkov is missing: `make tools` installs it into .venv-checkov (its own environment: its pins "
                    "conflict with the project's)")  # fmt: skip
    for name in KUSTOMIZATIONS[1:]:
        (tmp_path / f"{name.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(built(name)))
    for name in JOB_TEMPLATES:
        shutil.copy(KUBERNETES / name, tmp_path / Path(name).name)
    out = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(out.stdout)
    results = (reports[0] if isinstance(reports, list) else reports)["results"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert not failed, failed
    skipped = results["skipped_checks"]
    assert all(c["check_result"].get("suppress_comment") for c in skipped)  # every skip says why
    assert {c["check_id"] for c in skipped} == SKIPPED_ON_PURPOSE
    assert len(results["passed_checks"]) > 300
    print(
        f"\ncheckov {subprocess.run([str(CHECKOV), '--version'], capture_output=True, text=True).stdout.strip()}: "
        f"{len(results['passed_checks'])} passed, 0 failed, {len(skipped)} skipped with a reason: "
        + "; ".join(sorted({f"{c['check_id']} ({c['check_result']['suppress_comment']})" for c in skipped}))
    )


def test_the_deployment_follows_the_image_and_the_settings():
    image = stages(dockerfile_instructions((REPO / "Dockerfile").read_text()))["<final>"]
    image_env = final_env(image)
    user = next(rest for keyword, rest in image if keyword == "USER").split(":")[0]
    for name in KUSTOMIZATIONS:
        resources = built(name)
        deployment = by_kind(resources, "Deployment", "adaptiveclick")
        pod = deployment["spec"]["template"]["spec"]
        backend = container(deployment, "backend")
        assert str(pod["securityContext"]["runAsUser"]) == user and pod["securityContext"]["runAsNonRoot"]
        assert backend["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in backend["volumeMounts"]}
        assert {image_env["ADAPTIVECLICK_CACHE"], image_env["MODEL_DIR"], "/tmp"} <= mounts
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert backend[probe]["exec"]["command"][-1] == "http://127.0.0.1:9090/health"
        assert "/opt/adaptiveclick/healthcheck.py" in backend["readinessProbe"]["exec"]["command"]
        startup = backend["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # as the image's HEALTHCHECK allows
        assert env_of(backend)["ADAPTIVECLICK_REPLICA_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        sources = {next(iter(s)): next(iter(s.values()))["name"] for s in backend["envFrom"]}
        assert sources == {"configMapRef": "adaptiveclick-settings", "secretRef": "adaptiveclick-credentials"}
        settings = by_kind(resources, "ConfigMap", "adaptiveclick-settings")["data"]
        assert set(settings) <= settings_variables(), set(settings) - settings_variables()
        assert settings["MODEL_REGISTRY"].startswith("s3://")
        service = by_kind(resources, "Service", "adaptiveclick")
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        pdb = by_kind(resources, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    gpu = container(by_kind(built("overlays/gpu"), "Deployment", "adaptiveclick"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"].endswith(":cuda")
    assert env_of(gpu)["ADAPTIVECLICK_TRAINING_RUNNER"]["value"] == "kubernetes"
    template = env_of(gpu)["ADAPTIVECLICK_TRAINING_JOB_TEMPLATE"]["value"]
    assert template == str(DEFAULT_JOB_TEMPLATE)
    assert any(m["mountPath"] == str(Path(template).parent) for m in gpu["volumeMounts"])
    cpu = container(by_kind(built("overlays/cpu"), "Deployment", "adaptiveclick"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {}) and cpu["image"].endswith(":cpu")


def test_the_ingress_hashes_by_the_project_of_the_connection_url():
    resources = built("base")
    projects = by_kind(resources, "Ingress", "adaptiveclick-projects")
    plain = by_kind(resources, "Ingress", "adaptiveclick")
    annotations = projects["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$1"
    assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
    (path,) = projects["spec"]["rules"][0]["http"]["paths"]
    assert path["pathType"] == "ImplementationSpecific"
    # ingress-nginx makes the path `~* "^<path>"`: its first group is the id backend/projects.py reads
    nginx_regex = re.compile("^" + path["path"], re.IGNORECASE)
    for url, project in (("/projects/12/predict", "12"), ("/projects/12", "12"), ("/projects/7/versions", "7")):
        assert nginx_regex.match(url).group(1) == project == PREFIX.match(url).group(1)
    for url in ("/projects/x1/predict", "/projectsx/1", "/predict", "/projects/123/../4"):
        assert bool(nginx_regex.match(url) and nginx_regex.match(url).group(2) is not None) == bool(PREFIX.match(url))
    # the two Ingresses use two Services: ingress-nginx keeps one balancing setting per Service port
    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    assert (
        path["backend"]["service"]["name"]
        != plain["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    )
    assert {
        p["backend"]["service"]["name"] for i in (projects, plain) for p in i["spec"]["rules"][0]["http"]["paths"]
    } <= set(services)
    assert "upstream-hash-by" not in json.dumps(plain["metadata"].get("annotations", {}))
    # the plain nginx hashes the same ids
    site = (REPO / "deploy" / "nginx" / "adaptiveclick.conf").read_text()
    for pattern in re.findall(r'location ~ "(\^/projects/[^"]+)"', site):
        regex = re.compile(pattern.replace("?<adaptiveclick_project>", "?P<adaptiveclick_project>"))
        assert regex.match("/projects/12/predict").group("adaptiveclick_project") == "12"
        assert regex.match("/projects/12x/predict") is None


def test_the_jobs_agree_with_the_cluster_they_run_in():
    gpu = built("overlays/gpu")
    backend = container(by_kind(gpu, "Deployment", "adaptiveclick"))
    finetune, annotate = (job_template(name) for name in JOB_TEMPLATES)
    for job in (finetune, annotate):
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
        pod = spec["template"]["spec"]
        assert container(job)["image"] == backend["image"]  # the same image as the serving pods
        assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
        assert by_kind(gpu, "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
        assert container(job)["envFrom"] == backend["envFrom"]
        labels = spec["template"]["metadata"]["labels"]
        policies = [p for p in gpu if p["kind"] == "NetworkPolicy"]
        assert any(p["spec"]["podSelector"]["matchLabels"].items() <= labels.items() for p in policies)
    env = env_of(container(finetune))
    assert int(env["NODES"]["value"]) == finetune["spec"]["completions"] > 1
    headless = by_kind(gpu, "Service", finetune["spec"]["template"]["spec"]["subdomain"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    assert headless["spec"]["selector"].items() <= finetune["spec"]["template"]["metadata"]["labels"].items()
    port = headless["spec"]["ports"][0]["port"]
    assert env["RENDEZVOUS"]["value"] == f"$(JOB_NAME)-0.{headless['metadata']['name']}:{port}"
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert "ADAPTIVECLICK_FINETUNE_ARGS" in env and "value" not in env["ADAPTIVECLICK_FINETUNE_ARGS"]
    claim = finetune["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert by_kind(gpu, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    env = env_of(container(annotate))
    assert int(env["ADAPTIVECLICK_ANNOTATE_SHARDS"]["value"]) == annotate["spec"]["completions"]
    # the backend reads the template from the ConfigMap the overlay generates from the same file
    generated = by_kind(gpu, "ConfigMap", "adaptiveclick-finetune-job")["data"]
    assert generated == {"finetune-job.yaml": (KUBERNETES / JOB_TEMPLATES[0]).read_text()}
    # the Role allows Jobs in its namespace and nothing else
    role = by_kind(gpu, "Role")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list"]}]
    binding = by_kind(gpu, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "adaptiveclick", "namespace": "adaptiveclick"}]
