#!/usr/bin/env bash
# The image tier: builds the Dockerfile for real with podman and checks what the image promises (issue 26).
#
#   deploy/test-image.sh               # image + cvat: what CI runs after the test suite
#   deploy/test-image.sh image|cvat|compose|all ...
#
#   image    the CPU backend image, built twice (cold or from the layer cache, then cached); then: no compiler in
#            it; the process runs as the unprivileged user; /health within the start period; the image's
#            HEALTHCHECK passes; a Label-Studio-shaped click on a GrabCut image (mounted read-only as local files)
#            gives the host build's mask; `stop` ends it gracefully; a version published into the MODEL_DIR volume
#            is served after a restart, through the MSDA kernel built into the image; the OpenVINO engine runs
#            the op built into the image; all of it with `--read-only` and the two volumes. Prints sizes and times.
#   cvat     the CVAT function image (deploy/cvat/function.yaml's build on the backend image) and one CVAT event
#            through its handler inside it.
#   compose  the compose quick start: Label Studio 1.23.2 built into a local image, `podman-compose up` of
#            deploy/docker-compose.yml with the test's override (deploy/test/compose.local.yml), the backend
#            connected to a project through Label Studio's API, one keypoint through Label Studio's
#            interactive API, the brush mask scored against the ground truth. Opt-in (several minutes more).
#
# No Docker engine is needed: podman (Debian's, with runc and debootstrap). Image registries need not be reachable:
# the base image is made here (`debootstrap --variant=minbase bookworm`, imported as localhost/debian:bookworm, the
# Dockerfile's debian:bookworm-slim) once and reused. The build differs from a user's only in where the base image
# and the Python packages come from (build arguments and the optional pip.conf secret, see the Dockerfile).
#
# Environment:
#   PYTHON                  the project's virtualenv Python (numpy, requests, label-studio-sdk; default .venv)
#   ADAPTIVECLICK_DATASETS  folder with GrabCut/ (default: ../shared/datasets next to the checkout)
#   IMAGE_TEST_STATE        where the base image's root file system, logs and the pip.conf go
#                           (default /var/tmp/adaptiveclick-image-test)
#   IMAGE_TEST_COLD=1       build without the layer cache (a cold build's time on a warm machine)
#   IMAGE_TEST_KEEP=1       leave the test containers and volumes for inspection
#   IMAGE_TEST_REUSE=1      use the backend image as it is when there is one (iterating on the checks)
#   IMAGE_TEST_MIN_FREE_GB  free space the builds need in podman's storage (default 25 with PyPI's CUDA torch,
#                           10 with the CPU wheel); short of it the layer cache is pruned, then the tier stops
#   TORCH_INDEX_CPU         torch's index for the build (default: the Dockerfile's, PyTorch's CPU index, when it
#                           answers; else a CPU wheel of torch for cp311 in pip's find-links folders, served to the
#                           build on loopback; else PyPI, whose torch is the CUDA build: a larger image)
#   CI=true                 as root: apt-get installs the missing tools (podman, runc, debootstrap, jq, curl, ...)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
state=${IMAGE_TEST_STATE:-/var/tmp/adaptiveclick-image-test}
datasets=${ADAPTIVECLICK_DATASETS:-$(cd "$repo/.." && pwd)/shared/datasets}
python=${PYTHON:-$repo/.venv/bin/python}
base_image=localhost/debian:bookworm
image=localhost/adaptiveclick-backend:cpu
function_image=localhost/cvat.adaptiveclick.cpu
prefix=adaptiveclick-image-test
sample=106024.jpg          # 481x321, the image tests/ls_regions.click_request is made for
sample_gt=106024.bmp
cvat_click=(231 209)       # the same point as that click (48 %, 65 %), in pixels
cuda_torch=''
wheel_server=''
build_args=()
secrets=()
base_made=
summary=()

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(image cvat)
if [ "${parts[0]}" = all ]; then parts=(image cvat compose); fi
for part in "${parts[@]}"; do
  case "$part" in
    image|cvat|compose) ;;
    *) echo "usage: $0 [image|cvat|compose|all ...]" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*"; }
ok() { say "ok    $*"; summary+=("$*"); }
die() {
  say "FAIL  $*" >&2
  exit 1
}
wants() { case " ${parts[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
seconds_since() { echo $(( $(date +%s) - $1 )); }

# -- tools -----------------------------------------------------------------------------------------------------------

ensure_tools() {
  local missing=() tool
  for tool in podman:podman runc:runc debootstrap:debootstrap jq:jq curl:curl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
      say "installing with apt-get: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      die "missing tools: ${missing[*]} (apt-get install ${missing[*]}; with CI=true as root this script does it)"
    fi
  fi
  [ -x "$python" ] || die "no Python at $python: set PYTHON to the project's virtualenv Python (make install)"
  [ -d "$datasets/GrabCut/data_GT" ] || die "GrabCut not found under $datasets: set ADAPTIVECLICK_DATASETS"
  mkdir -p "$state"
}

free_gb() { echo $(( $(df -Pk "$(podman info --format '{{.Store.GraphRoot}}')" | awk 'NR==2 {print $4}') / 1048576 )); }

# Room for a build whose sources changed: the runtime stage's copy of /opt/venv is committed through a temporary
# tar of the layer, so its peak is about three times the environment (measured: 25 GB with PyPI's CUDA torch, a
# 6.3 GB environment). Short of that, the layer cache goes first (podman system prune), then the tier stops rather
# than fill the disk. IMAGE_TEST_MIN_FREE_GB overrides the estimate.
ensure_disk() {
  local need free
  need=${IMAGE_TEST_MIN_FREE_GB:-$([ -n "$cuda_torch" ] && echo 25 || echo 10)}
  if [ "${IMAGE_TEST_REUSE:-}" = 1 ] && podman image exists "$image"; then need=3; fi
  free=$(free_gb)
  if [ "$free" -lt "$need" ]; then
    say "only ${free} GB free for container storage (${need} GB needed): podman system prune --all"
    podman system prune --all --force >/dev/null
    free=$(free_gb)
    [ "$free" -ge "$need" ] || die "${free} GB free for container storage; the builds need about ${need} GB"
  fi
  say "${free} GB free for container storage (${need} GB needed)"
}

# A plain `podman run` fails in some sandboxes ("setrlimit RLIMIT_NOFILE: Operation not permitted"): then podman
# runs containers through deploy/test/oci-runtime-no-rlimits (runc without the rlimits), for this script only.
ensure_runtime() {
  local probe=$state/runtime-probe.log
  if podman run --rm "$base_image" true >"$probe" 2>&1; then
    say "podman runs containers as it is"
    return
  fi
  if ! grep -qi rlimit "$probe"; then
    cat "$probe" >&2
    die "podman cannot run a container (above)"
  fi
  cat >"$state/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
runtime = "norlimits"
[engine.runtimes]
norlimits = ["$repo/deploy/test/oci-runtime-no-rlimits"]
EOF
  export CONTAINERS_CONF=$state/containers.conf
  podman run --rm "$base_image" true >"$probe" 2>&1 || { cat "$probe" >&2; die "podman cannot run a container even through deploy/test/oci-runtime-no-rlimits"; }
  say "podman runs containers through deploy/test/oci-runtime-no-rlimits (this sandbox forbids setting rlimits)"
}

# localhost/debian:bookworm: Debian 12 minbase from the mirror apt uses, with the suites debian:bookworm-slim has.
ensure_base_image() {
  if podman image exists "$base_image"; then
    say "base image $base_image: present, reused"
    return
  fi
  local mirror rootfs start
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -E '^(deb|URIs:) ' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
  mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
  rootfs=$state/rootfs
  start=$(date +%s)
  rm -rf "$rootfs"
  say "making $base_image: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 \
    || { tail -20 "$state/debootstrap.log" >&2; die "debootstrap failed (log: $state/debootstrap.log)"; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base_image" >"$state/import.log" 2>&1 \
    || { cat "$state/import.log" >&2; die "podman import of the base image failed"; }
  rm -rf "$rootfs"
  base_made=1
  ok "base image $base_image made in $(seconds_since "$start")s ($(podman image inspect --format '{{.Size}}' "$base_image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# Where the Python packages come from: PyPI, through this machine's TLS-intercepting proxy when pip is configured
# with a CA bundle (PIP_CERT / pip config): handed to the build as secrets, never as a layer.
ensure_package_sources() {
  local cert
  cert=${PIP_CERT:-$("$python" -m pip config get global.cert 2>/dev/null || true)}
  cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
  printf '[global]\n' >"$state/pip.conf"
  if [ -f "$cert" ]; then
    printf 'cert = /run/secrets/pip-cert\n' >>"$state/pip.conf"
    secrets=(--secret "id=pip.conf,src=$state/pip.conf" --secret "id=pip-cert,src=$cert")
    say "pip in the build trusts $cert (a build secret)"
  fi
  build_args=(--build-arg VARIANT=cpu --build-arg "BASE_IMAGE=$base_image")
  local wheel
  if [ -n "${TORCH_INDEX_CPU:-}" ]; then
    build_args+=(--build-arg "TORCH_INDEX_CPU=$TORCH_INDEX_CPU")
    say "torch from $TORCH_INDEX_CPU (TORCH_INDEX_CPU)"
  elif curl -fsS -o /dev/null --max-time 20 https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    say "torch from the Dockerfile's default, PyTorch's CPU index"
  elif wheel=$(local_cpu_torch_wheel) && [ -n "$wheel" ]; then
    serve_torch_wheel "$wheel"
  else
    build_args+=(--build-arg TORCH_INDEX_CPU=https://pypi.org/simple)
    cuda_torch=1
    say "NOTE: download.pytorch.org does not answer here: torch from PyPI, which is its CUDA build (with"
    say "      the nvidia-* libraries); a user's CPU image gets the +cpu wheel and is that much smaller"
  fi
}

# The newest CPU wheel of torch for the image's Python (cp311, x86_64) in pip's find-links folders, if any
local_cpu_torch_wheel() {
  local folders
  folders=$("$python" -m pip config get global.find-links 2>/dev/null || true)
  # shellcheck disable=SC2086  # find-links is a space-separated list of folders
  find ${folders:-/opt/wheels} -maxdepth 1 -name 'torch-*+cpu-cp311-cp311-*linux*_x86_64.whl' 2>/dev/null | sort -V | tail -1
}

# serve_torch_wheel WHEEL: a one-package index on loopback that the build's pip reads torch from (the build runs with
# --network host); its other packages still come from PyPI (the pip.conf secret's extra index). Only where the
# packages come from changes: the image is the one users build from PyTorch's CPU index.
serve_torch_wheel() {
  local wheel=$1 port version
  version=$(basename "$wheel" | cut -d- -f2)
  rm -rf "$state/torch-index" && mkdir -p "$state/torch-index/torch"
  ln -s "$wheel" "$state/torch-index/torch/"
  port=$(free_port)
  "$python" -m http.server --bind 127.0.0.1 --directory "$state/torch-index" "$port" >"$state/torch-index.log" 2>&1 &
  wheel_server=$!
  printf 'extra-index-url = https://pypi.org/simple\n' >>"$state/pip.conf"
  [ ${#secrets[@]} -gt 0 ] || secrets=(--secret "id=pip.conf,src=$state/pip.conf")
  build_args+=(--build-arg "TORCH_INDEX_CPU=http://127.0.0.1:$port/" --build-arg "TORCH_VERSION=${version%%+*}")
  say "torch $version from the CPU wheel $wheel (served to the build on 127.0.0.1:$port)"
}

# -- builds ----------------------------------------------------------------------------------------------------------

# build LOG ARGS...: podman build; sets built=(seconds, steps from the layer cache, steps that make a layer)
built=()
build() {
  local log=$1 start
  shift
  start=$(date +%s)
  if ! podman build --format docker --network host ${secrets[@]+"${secrets[@]}"} "$@" >"$log" 2>&1; then
    tail -40 "$log" >&2
    die "podman build failed (whole log: $log)"
  fi
  # steps that make a layer (every STEP but FROM), and how many of them came from the layer cache
  built=("$(seconds_since "$start")" "$(grep -c -- '--> Using cache' "$log" || true)"
    "$(grep -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/' "$log" | grep -vc ': FROM ' || true)")
}

build_backend() {
  local no_cache=() first=() second=() id1 id2 kind
  # (HEALTHCHECK needs the docker format: podman's default OCI format drops it)
  [ "${IMAGE_TEST_COLD:-}" = 1 ] && no_cache=(--no-cache)
  say "building $image (log: $state/build-1.log)"
  build "$state/build-1.log" ${no_cache[@]+"${no_cache[@]}"} "${build_args[@]}" -t "$image" .
  first=("${built[@]}")
  id1=$(podman image inspect --format '{{.Id}}' "$image")
  kind="${first[1]} of ${first[2]} steps from the layer cache"
  if [ -n "$base_made" ] || [ ${#no_cache[@]} -gt 0 ]; then kind="cold: $kind, all within this build"; fi
  ok "backend image built in ${first[0]}s ($kind)"
  build "$state/build-2.log" "${build_args[@]}" -t "$image" .
  second=("${built[@]}")
  id2=$(podman image inspect --format '{{.Id}}' "$image")
  [ "$id1" = "$id2" ] || die "the second build made another image ($id2, first $id1): a step is not cacheable"
  ok "backend image rebuilt in ${second[0]}s (${second[1]} of ${second[2]} steps from the layer cache, same image)"
  # keep this build's stages (the layer cache of the next run) by name; drop layers of earlier sources
  build "$state/build-stage.log" --target build "${build_args[@]}" -t "$image-build-stage" .
  podman image prune --force >/dev/null
  local size torch
  size=$(podman image inspect --format '{{.Size}}' "$image")
  torch=$(podman run --rm --no-healthcheck "$image" sh -c 'cd /opt/venv/lib/python3.11/site-packages && du -smc torch nvidia triton 2>/dev/null; true' \
    | awk '{d[$2]=$1} END {printf "torch %d MB, nvidia %d MB, triton %d MB", d["torch"], d["nvidia"], d["triton"]}')
  ok "image size $(awk -v s="$size" 'BEGIN {printf "%.2f GB", s/1e9}') ($torch)"
}

# -- the backend image ---------------------------------------------------------------------------------------------

containers=()
volumes=()
cleanup() {
  local status=$?
  [ -z "$wheel_server" ] || kill "$wheel_server" 2>/dev/null || true
  if [ "$status" -ne 0 ] && [ ${#containers[@]} -gt 0 ]; then
    for c in "${containers[@]}"; do
      say "--- log of $c (last 30 lines)" >&2
      podman logs "$c" 2>&1 | grep -v 'systemd' | tail -30 >&2 || true
    done
  fi
  if [ "${IMAGE_TEST_KEEP:-}" != 1 ]; then
    for c in ${containers[@]+"${containers[@]}"}; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    for v in ${volumes[@]+"${volumes[@]}"}; do podman volume rm -f "$v" >/dev/null 2>&1 || true; done
  fi
  if wants compose && [ -n "${compose_cmd:-}" ] && [ "${IMAGE_TEST_KEEP:-}" != 1 ]; then
    compose down -v >/dev/null 2>&1 || true
  fi
  if [ ${#summary[@]} -gt 0 ]; then
    say ""
    say "image tier summary:"
    printf '  %s\n' "${summary[@]}"
  fi
  [ "$status" -eq 0 ] || say "image tier FAILED (logs and state: $state)" >&2
  exit "$status"
}
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The connection credential every backend here runs with (as deploy/env.example ships it: Label Studio connects
# with Basic auth), made once per run; the checks (deploy/test/image_checks.py) send it
auth_user=label-studio
auth_pass=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
export IMAGE_TEST_BASIC_AUTH="$auth_user:$auth_pass"

# start_backend NAME PORT [podman run options...]: the image's own command, read-only root, its two volumes
start_backend() {
  local name=$1 port=$2
  shift 2
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  containers+=("$name")
  volumes+=("$name-cache" "$name-models")
  # --read-only-tmpfs=false: no tmpfs on /tmp, as Docker's --read-only
  podman run -d --name "$name" --read-only --read-only-tmpfs=false \
    -v "$name-cache:/var/cache/adaptiveclick" -v "$name-models:/var/lib/adaptiveclick/models" \
    -v "$datasets/GrabCut/data_GT:/data/images:ro" -e LOCAL_FILES_DOCUMENT_ROOT=/data/images \
    -e "BASIC_AUTH_USER=$auth_user" -e "BASIC_AUTH_PASS=$auth_pass" \
    -p "127.0.0.1:$port:9090" "$@" "$image" >"$state/$name.run.log" 2>&1 \
    || { cat "$state/$name.run.log" >&2; die "podman run $name failed"; }
}

# worker_libraries NAME: the MSDA libraries mapped into the container's processes
worker_libraries() {
  podman exec "$1" sh -c 'cat /proc/[0-9]*/maps 2>/dev/null' | grep -oE '/[^ ]*adaptiveclick_msda[^ ]*\.so' | sort -u || true
}

# no_builds_at_run_time NAME: nothing compiled into the cache volume or the temporary folder, no "building" line
no_builds_at_run_time() {
  local built
  built=$(podman exec "$1" sh -c 'find /var/cache/adaptiveclick "${TMPDIR:-/tmp}" -name "BUILD_*" 2>/dev/null' || true)
  [ -z "$built" ] || die "$1 compiled a kernel at run time: $built"
  if grep -qE '"msg": "building adaptiveclick_msda' <<<"$(podman logs "$1" 2>&1)"; then
    die "$1's log says it built a kernel at run time"
  fi
}

check_image() {
  local name=$prefix-backend port start up period out uids stop_s code version ov_name ov_port libs
  say ""
  say "== the backend image"

  out=$(podman run --rm --no-healthcheck "$image" sh -c 'for c in cc gcc g++ c++ cpp clang nvcc as ld make; do command -v "$c"; done;
    dpkg-query -W -f "\${Package}\n" | grep -E "^(gcc(-[0-9]+)?|g\+\+(-[0-9]+)?|cpp(-[0-9]+)?|binutils.*|clang.*|lib.*-dev|python3.*-dev)$" || true' 2>&1 | grep -v systemd || true)
  [ -z "$out" ] || die "the runtime stage holds a compiler or headers: $out"
  ok "no compiler in the runtime stage (none of cc gcc g++ c++ cpp clang nvcc as ld make; no gcc/binutils/-dev package)"

  "$python" deploy/test/image_checks.py host-reference --images "$datasets/GrabCut/data_GT" --image "$sample" \
    --out "$state/host-reference.npz" || die "the host build's reference click failed"

  port=$(free_port)
  period=$(podman image inspect "$image" | jq '(.[0].Healthcheck.StartPeriod // 0) / 1000000000 | floor')
  [ "$period" -gt 0 ] || die "the image has no HEALTHCHECK start period (built without --format docker?)"
  start=$(date +%s.%N)
  start_backend "$name" "$port"
  "$python" deploy/test/image_checks.py wait-up "http://127.0.0.1:$port/health" "$period" >/dev/null \
    || die "/health did not answer UP within the start period (${period}s)"
  up=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  ok "/health UP ${up}s after \`podman run\` (start period ${period}s), read-only root file system"

  uids=$(podman exec "$name" sh -c 'for s in /proc/[0-9]*/status; do awk "/^Name/ {n=\$2} /^Uid/ {print n \":\" \$2}" "$s"; done' 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ',')
  if grep -qv '^10001$' <<<"$(podman exec "$name" sh -c 'for s in /proc/[0-9]*/status; do awk "/^Uid/ {print \$2}" "$s"; done')"; then
    die "a process of the container does not run as uid 10001: $uids"
  fi
  [ "$(podman exec "$name" sh -c 'grep -l "^Name:.*adaptiveclick" /proc/[0-9]*/status 2>/dev/null | wc -l')" -ge 2 ] \
    || die "expected gunicorn's master and worker (adaptiveclick serve) in the container: $uids"
  ok "runs as the unprivileged user $(podman image inspect --format '{{.Config.User}}' "$image") (adaptiveclick): processes (count name:uid)${uids%,}"

  out=$(podman healthcheck run "$name" 2>&1 | grep -v systemd || true)
  podman healthcheck run "$name" >/dev/null 2>&1 || die "the image's HEALTHCHECK fails: $out"
  ok "the image's HEALTHCHECK passes: $(podman image inspect "$image" | jq -r '.[0].Healthcheck.Test | join(" ")')"

  out=$("$python" deploy/test/image_checks.py click "http://127.0.0.1:$port" --image "$sample" \
    --reference "$state/host-reference.npz" --gt "$datasets/GrabCut/boundary_GT/$sample_gt") \
    || die "the click did not give the host build's mask"
  ok "Label-Studio-shaped click on local files $sample: $out"

  start=$(date +%s.%N)
  podman stop "$name" >/dev/null 2>&1
  stop_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || die "podman stop: exit code $code after ${stop_s}s (137: killed after the 10 s grace period)"
  grep -q 'Shutting down: Master' <<<"$(podman logs "$name" 2>&1)" || die "gunicorn did not log its shutdown"
  ok "podman stop: exit code 0 after ${stop_s}s (grace period 10 s), gunicorn shut down"

  # a fine-tuned version published into the MODEL_DIR volume by the product's own command, in a one-off container
  version=ft-image-test-$(date +%s)
  out=$(podman run --rm --no-healthcheck --read-only --read-only-tmpfs=false \
    -v "$name-cache:/var/cache/adaptiveclick" -v "$name-models:/var/lib/adaptiveclick/models" \
    -v "$datasets/GrabCut:/data/GrabCut:ro" "$image" \
    adaptiveclick finetune --dataset GrabCut=/data/GrabCut --init random:tiny --size tiny --steps 1 --batch-size 1 \
    --val-max-images 1 --val-clicks 1 --workers 0 --no-progress --force --version "$version" \
    --registry /var/lib/adaptiveclick/models/registry --output "/var/lib/adaptiveclick/models/jobs/$version" 2>&1) \
    || { say "$out" | tail -20 >&2; die "adaptiveclick finetune in the image failed"; }
  grep -q "\"published\": \"$version\"" <<<"$out" || { say "$out" | tail -20 >&2; die "finetune did not publish $version"; }
  start=$(date +%s.%N)
  podman start "$name" >/dev/null 2>&1
  "$python" deploy/test/image_checks.py wait-up "http://127.0.0.1:$port/health" "$period" >/dev/null \
    || die "/health did not answer UP after the restart"
  up=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  out=$("$python" deploy/test/image_checks.py click "http://127.0.0.1:$port" --image "$sample" --version "$version") \
    || die "after the restart the published version $version is not what answers"
  ok "version $version published into the MODEL_DIR volume served after the restart (UP in ${up}s): $out"

  libs=$(worker_libraries "$name")
  case "$libs" in
    /opt/venv/share/adaptiveclick/torch_extensions/adaptiveclick_msda_cpu-*/adaptiveclick_msda_cpu.so) ;;
    *) die "the worker did not load the image's compiled MSDA kernel (mapped: ${libs:-none})" ;;
  esac
  no_builds_at_run_time "$name"
  ok "the compiled MSDA kernel built into the image ran the AdaptiveClick version: $libs (nothing compiled at start)"
  podman stop "$name" >/dev/null 2>&1

  ov_name=$prefix-openvino
  ov_port=$(free_port)
  start=$(date +%s.%N)
  start_backend "$ov_name" "$ov_port" -e 'ADAPTIVECLICK_PREDICTOR=random:tiny#engine=openvino'
  "$python" deploy/test/image_checks.py wait-up "http://127.0.0.1:$ov_port/health" "$period" >/dev/null \
    || die "/health of the OpenVINO engine's container did not answer UP"
  up=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  out=$("$python" deploy/test/image_checks.py click "http://127.0.0.1:$ov_port" --image "$sample") \
    || die "the OpenVINO engine's click failed"
  libs=$(worker_libraries "$ov_name")
  case "$libs" in
    *"/opt/venv/share/adaptiveclick/torch_extensions/adaptiveclick_msda_openvino-"*"/libadaptiveclick_msda_openvino.so"*) ;;
    *) die "the OpenVINO engine did not load the image's MSDA op (mapped: ${libs:-none})" ;;
  esac
  grep -q "'msda': 'custom-op'" <<<"$(podman logs "$ov_name" 2>&1)" || die "the OpenVINO engine does not report the custom MSDA op"
  no_builds_at_run_time "$ov_name"
  if grep -q openvino_telemetry <<<"$(podman logs "$ov_name" 2>&1)"; then
    die "OpenVINO's telemetry complains (its consent file in the image is not read)"
  fi
  ok "the OpenVINO op built into the image ran engine=openvino (UP in ${up}s, export included): $(echo "$libs" | grep openvino)"
  podman stop "$ov_name" >/dev/null 2>&1
  image_checked=1
}

# -- the CVAT function -----------------------------------------------------------------------------------------------

check_cvat() {
  local context=$state/cvat-context result=() output env_args
  say ""
  say "== the CVAT function"
  rm -rf "$context"
  mkdir -p "$context"
  cp deploy/cvat/main.py "$context/"
  "$python" deploy/test/image_checks.py cvat-containerfile deploy/cvat/function.yaml "$image" >"$context/Containerfile"
  build "$state/build-cvat.log" -f "$context/Containerfile" -t "$function_image" "$context"
  result=("${built[@]}")
  ok "function image (deploy/cvat/function.yaml's build on the backend image) built in ${result[0]}s"
  read -r -a env_args <<<"$("$python" deploy/test/image_checks.py cvat-env deploy/cvat/function.yaml)"
  output=$(podman run --rm --no-healthcheck ${env_args[@]+"${env_args[@]}"} -w /opt/nuclio \
    -v "$datasets/GrabCut:/data/GrabCut:ro" -v "$repo/deploy/test/cvat_event.py:/opt/image-test/cvat_event.py:ro" \
    "$function_image" python /opt/image-test/cvat_event.py "/data/GrabCut/data_GT/$sample" "${cvat_click[@]}" \
    "/data/GrabCut/boundary_GT/$sample_gt" 2>&1) || { say "$output" | tail -30 >&2; die "the CVAT event failed"; }
  ok "CVAT event (${cvat_click[*]} on $sample) through main.handler in the function image: $(say "$output" | grep '^handler:' | sed 's/^handler: //')"
  cvat_checked=1
}

# -- compose ---------------------------------------------------------------------------------------------------------

compose_cmd=''
compose() {
  "$compose_cmd" --env-file "$state/compose.env" -p "$prefix" \
    -f deploy/docker-compose.yml -f deploy/test/compose.local.yml "$@"
}

check_compose() {
  local ls_image=localhost/label-studio:1.23.2-local key ls_port backend_port start result=() out up_ls up_backend
  local backend_container
  say ""
  say "== the compose quick start"
  # podman-compose from PyPI, in its own virtualenv (Debian 12's 1.0.3 predates `depends_on: required`)
  if [ ! -x "$state/compose-venv/bin/podman-compose" ]; then
    "$python" -m venv "$state/compose-venv"
    "$state/compose-venv/bin/pip" install --quiet podman-compose >"$state/compose-pip.log" 2>&1 \
      || { tail -20 "$state/compose-pip.log" >&2; die "pip install podman-compose failed"; }
  fi
  compose_cmd=$state/compose-venv/bin/podman-compose
  build "$state/build-label-studio.log" -f deploy/test/label-studio.Containerfile \
    --build-arg "BASE_IMAGE=$base_image" -t "$ls_image" deploy/test
  result=("${built[@]}")
  ok "Label Studio 1.23.2 image (pip on the local base, for this test only) built in ${result[0]}s (${result[1]} of ${result[2]} steps from the layer cache)"

  key=$("$python" -c 'import secrets; print(secrets.token_hex(20))')
  ls_port=$(free_port)
  backend_port=$(free_port)
  rm -rf "$state/compose-images" "$state/compose-weights"
  mkdir -p "$state/compose-images" "$state/compose-weights"
  # a sub-folder: Label Studio refuses a Local files storage at LOCAL_FILES_DOCUMENT_ROOT itself
  mkdir -p "$state/compose-images/grabcut"
  cp "$datasets/GrabCut/data_GT/$sample" "$state/compose-images/grabcut/"
  # what a user puts in deploy/.env: the two required values; host folders and ports chosen by the test
  cat >"$state/compose.env" <<EOF
LABEL_STUDIO_PASSWORD=pw-$key
LABEL_STUDIO_API_KEY=$key
BASIC_AUTH_USER=$auth_user
BASIC_AUTH_PASS=$auth_pass
ADAPTIVECLICK_ADMIN_TOKEN=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
LABEL_STUDIO_PORT=$ls_port
BACKEND_PORT=$backend_port
IMAGES_DIR=$state/compose-images
WEIGHTS_DIR=$state/compose-weights
EOF
  compose down -v >/dev/null 2>&1 || true
  start=$(date +%s.%N)
  compose up -d >"$state/compose-up.log" 2>&1 \
    || { tail -30 "$state/compose-up.log" >&2; die "podman-compose up failed (log: $state/compose-up.log)"; }
  "$python" deploy/test/image_checks.py wait-up "http://127.0.0.1:$backend_port/health" 300 >/dev/null \
    || { compose logs >"$state/compose.log" 2>&1 || true; die "the backend did not answer /health (logs: $state/compose.log)"; }
  up_backend=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  "$python" deploy/test/image_checks.py wait-up --anonymous "http://127.0.0.1:$ls_port/health" 600 >/dev/null \
    || { compose logs >"$state/compose.log" 2>&1 || true; die "Label Studio did not answer /health (logs: $state/compose.log)"; }
  up_ls=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  backend_container=$(podman ps --filter "label=com.docker.compose.project=$prefix" \
    --filter label=com.docker.compose.service=adaptiveclick --format '{{.Names}}')
  [ -n "$backend_container" ] || die "no running container of the compose service adaptiveclick"
  podman healthcheck run "$backend_container" >/dev/null 2>&1 || die "the backend's HEALTHCHECK fails under compose"
  ok "podman-compose up: the backend UP after ${up_backend}s (its HEALTHCHECK passes), Label Studio UP after ${up_ls}s (first start: migrations)"
  out=$("$python" deploy/test/image_checks.py compose-click --ls "http://127.0.0.1:$ls_port" --token "$key" \
    --backend-url http://adaptiveclick:9090 --image "$sample" --gt "$datasets/GrabCut/boundary_GT/$sample_gt") \
    || { compose logs >"$state/compose.log" 2>&1 || true; die "the click through Label Studio failed (logs: $state/compose.log)"; }
  ok "compose: $(say "$out" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
  compose down -v >/dev/null 2>&1 || true
  compose_checked=1
}

# -- main ------------------------------------------------------------------------------------------------------------

tier_start=$(date +%s)
ensure_tools
ensure_package_sources
ensure_disk
ensure_base_image
ensure_runtime
if [ "${IMAGE_TEST_REUSE:-}" = 1 ] && podman image exists "$image"; then
  say "IMAGE_TEST_REUSE=1: $image as it is, not rebuilt (no build times)"
else
  build_backend
fi
# (bash abandons a function at an expansion error without `set -e` noticing: each part sets its flag last)
image_checked='' cvat_checked='' compose_checked=''
if wants image; then check_image; [ -n "$image_checked" ] || die "the image checks stopped before their end"; fi
if wants cvat; then check_cvat; [ -n "$cvat_checked" ] || die "the CVAT checks stopped before their end"; fi
if wants compose; then check_compose; [ -n "$compose_checked" ] || die "the compose checks stopped before their end"; fi
ok "image tier (${parts[*]}) passed in $(seconds_since "$tier_start")s"
