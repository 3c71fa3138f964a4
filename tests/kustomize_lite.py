"""``kubectl kustomize`` for the few features deploy/kubernetes uses, so CI can check what an overlay builds without
kubectl: ``resources`` (files and kustomization folders), ``namespace``, ``configMapGenerator`` (``envs``, ``files``;
names without hash suffix: the kustomizations say ``disableNameSuffixHash``), ``images`` (``newName``, ``newTag``,
``digest``) and ``patches`` given by path (strategic merge, the target named by the patch's kind and name).

A kustomization using anything else is refused, and tests/integration/test_kubernetes_manifests.py compares the
output with ``kubectl kustomize``'s wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions", "images",
                "patches"}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
#: strategic merge keys of the lists the patches touch (Kubernetes' patchMergeKey); other lists are replaced
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "ports": "containerPort", "volumeMounts": "mountPath"}  # fmt: skip


class KustomizeError(ValueError):
    """A kustomization this renderer does not handle."""


def build(folder: Path) -> list[dict]:
    """The resources ``folder``'s kustomization.yaml builds."""
    folder = Path(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{folder}: fields this renderer does not handle: {sorted(unknown)}")
    if not (spec.get("generatorOptions") or {}).get("disableNameSuffixHash", not spec.get("configMapGenerator")):
        raise KustomizeError(f"{folder}: generated names need disableNameSuffixHash: true")
    resources: list[dict] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        resources += build(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in spec.get("configMapGenerator", []):
        resources.append(config_map(folder, generator))
    for image in spec.get("images", []):
        for resource in resources:
            for container in containers(resource):
                set_image(container, image)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{folder}: only patches given by path are handled, got {patch}")
        body = yaml.safe_load((folder / patch["path"]).read_text())
        target = [
            r for r in resources if (r["kind"], r["metadata"]["name"]) == (body["kind"], body["metadata"]["name"])
        ]
        if len(target) != 1:
            raise KustomizeError(f"{folder}: patch {patch['path']} matches {len(target)} resources")
        merged = merge(target[0], body)
        resources[resources.index(target[0])] = merged
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    return resources


def config_map(folder: Path, generator: dict) -> dict:
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        for line in (folder / env_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                data[key] = value
    for file in generator.get("files", []):
        key, _, source = file.partition("=")
        data[key if source else Path(key).name] = (folder / (source or key)).read_text()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}


def pod_spec(resource: dict) -> dict | None:
    spec = resource.get("spec") or {}
    if resource["kind"] == "Pod":
        return spec
    if resource["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def containers(resource: dict) -> list[dict]:
    spec = pod_spec(resource) or {}
    return spec.get("containers", []) + spec.get("initContainers", [])


def set_image(container: dict, image: dict) -> None:
    name = container["image"].split("@")[0]
    repository, tag = name.rsplit(":", 1) if ":" in name.rsplit("/", 1)[-1] else (name, None)
    if repository != image["name"]:
        return
    repository = image.get("newName", repository)
    if "digest" in image:
        container["image"] = f"{repository}@{image['digest']}"
    else:
        tag = image.get("newTag", tag)
        container["image"] = f"{repository}:{tag}" if tag else repository


def merge(base, patch, key: str | None = None):
    """Kubernetes' strategic merge for maps and the keyed lists in MERGE_KEYS; other values are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for name, value in patch.items():
            out[name] = merge(base[name], value, name) if name in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and MERGE_KEYS.get(key or ""):
        merge_key = MERGE_KEYS[key or ""]
        out, added = copy.deepcopy(base), []
        for item in patch:
            found = next((i for i, old in enumerate(out) if old.get(merge_key) == item.get(merge_key)), None)
            if found is None:
                added.append(copy.deepcopy(item))
            else:
                out[found] = merge(out[found], item)
        return added + out  # as kustomize orders them: the patch's new items first
    return copy.deepcopy(patch)


if __name__ == "__main__":  # print what an overlay builds, as `kubectl kustomize FOLDER` would
    import sys

    print(yaml.safe_dump_all(build(Path(sys.argv[1])), sort_keys=False), end="")
