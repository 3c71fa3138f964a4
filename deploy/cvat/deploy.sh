#!/usr/bin/env bash
# Build the backend image and deploy the AdaptiveClick interactor into CVAT's nuclio (CVAT must be running with
# its serverless components: docker compose -f docker-compose.yml -f components/serverless/docker-compose.serverless.yml up -d).
#
#   deploy/cvat/deploy.sh [cpu|gpu] [PREDICTOR_SPEC]
#
# PREDICTOR_SPEC (default: $ADAPTIVECLICK_PREDICTOR, else baseline) is a predictor spec the function loads at
# start: https://...#sha256=..., s3://bucket/key, or a path inside the container.
set -euo pipefail

variant=${1:-cpu}
predictor=${2:-${ADAPTIVECLICK_PREDICTOR:-baseline}}
repo=$(cd "$(dirname "$0")/../.." && pwd)
case "$variant" in
  cpu) image=adaptiveclick-backend:cpu; build_variant=cpu; file=function.yaml ;;
  gpu) image=adaptiveclick-backend:cuda; build_variant=cuda; file=function-gpu.yaml ;;
  *) echo "usage: $0 [cpu|gpu] [PREDICTOR_SPEC]" >&2; exit 2 ;;
esac
for tool in docker nuctl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is not installed (nuctl: https://github.com/nuclio/nuclio/releases, the version CVAT uses)" >&2
    exit 3
  fi
done

docker build --build-arg "VARIANT=$build_variant" -t "$image" "$repo"
nuctl create project cvat --platform local >/dev/null 2>&1 || true  # exists already after the first deploy
nuctl deploy --project-name cvat --platform local \
  --path "$repo/deploy/cvat" --file "$repo/deploy/cvat/$file" \
  --env "ADAPTIVECLICK_PREDICTOR=$predictor"
nuctl get function --platform local
