#!/usr/bin/env bash
# Build the backend image and smoke-test it: the container must turn healthy and answer /health.
#
#   deploy/build-image.sh [cpu|cuda] [TAG]       # default: cpu, adaptiveclick-backend:<variant>
#
# Needs a Docker engine (`docker info` must answer); exits 3 with a message when there is none.
set -euo pipefail

variant=${1:-cpu}
case "$variant" in
  cpu|cuda) ;;
  *) echo "usage: $0 [cpu|cuda] [TAG]" >&2; exit 2 ;;
esac
tag=${2:-adaptiveclick-backend:$variant}
repo=$(cd "$(dirname "$0")/.." && pwd)
health_timeout_s=${HEALTH_TIMEOUT_S:-300}

if ! command -v docker >/dev/null 2>&1; then
  echo "docker is not installed: cannot build $tag" >&2
  exit 3
fi
if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers (docker info failed): cannot build $tag" >&2
  exit 3
fi

echo "building $tag (VARIANT=$variant) from $repo"
docker build --build-arg "VARIANT=$variant" -t "$tag" "$repo"

gpu_args=()
if [ "$variant" = cuda ]; then gpu_args=(--gpus 1); fi
container=$(docker run -d --rm -p 127.0.0.1::9090 ${gpu_args[@]+"${gpu_args[@]}"} "$tag")
trap 'docker stop -t 30 "$container" >/dev/null 2>&1 || true' EXIT

echo "waiting for $container to turn healthy (at most ${health_timeout_s}s)"
deadline=$((SECONDS + health_timeout_s))
status=starting
while [ "$SECONDS" -lt "$deadline" ]; do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || echo gone)
  case "$status" in
    healthy) break ;;
    unhealthy|gone) break ;;
  esac
  sleep 2
done
if [ "$status" != healthy ]; then
  echo "container is $status; its log:" >&2
  docker logs "$container" 2>&1 | tail -50 >&2 || true
  exit 1
fi

port=$(docker port "$container" 9090/tcp | head -1 | sed 's/.*://')
docker exec "$container" python /opt/adaptiveclick/healthcheck.py
echo "$tag is healthy; /health on 127.0.0.1:$port answered"
# the kernels built into the image load without a compiler
docker exec "$container" python -m adaptiveclick.ops.build --cpu yes --cuda "$([ "$variant" = cuda ] && echo yes || echo no)"
