# syntax=docker/dockerfile:1
# AdaptiveClick backend: the Label Studio ML backend (`adaptiveclick serve`), also the base of the CVAT function.
#
#   docker build -t adaptiveclick-backend:cpu .                                  # CPU image (default)
#   docker build --build-arg VARIANT=cuda -t adaptiveclick-backend:cuda .        # CUDA 13.0 image
#   docker build --build-arg VARIANT=cuda --build-arg TORCH_CUDA_ARCH_LIST="9.0" -t adaptiveclick-backend:h100 .
#   docker build --build-arg OPENVINO=no -t adaptiveclick-backend:cpu-torch-only .  # without the OpenVINO engine
#
# Stages: a toolchain per variant (a C++ compiler and Python 3.11 with its headers in the virtual environment
# /opt/venv), a build stage (torch, the project, the MSDA kernels compiled ahead of time; for CUDA on NVIDIA's devel
# image with nvcc, no GPU needed) and a runtime stage without compilers. Weights are never part of the image: mount
# them, or name a URL / s3:// URI in ADAPTIVECLICK_PREDICTOR and the loader fetches them at start into
# ADAPTIVECLICK_CACHE (a volume in deploy/docker-compose.yml).
#
# Where packages come from (nothing of it stays in the image): the base image is BASE_IMAGE (CPU); torch comes from
# TORCH_INDEX_CPU / TORCH_INDEX_CUDA; every other Python package from PyPI, or from what an optional pip.conf secret
# says (a mirror or private index, and a CA bundle for a TLS-intercepting proxy as a second secret):
#   docker build --secret id=pip.conf,src=pip.conf --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt .
# with `cert = /run/secrets/pip-cert` in that pip.conf. Secrets, unlike build arguments, stay out of the layers
# and out of `docker history`.

ARG VARIANT=cpu
# The CPU image's base, in both its stages: Debian 12, whose python3.11 is the project's Python.
ARG BASE_IMAGE=debian:bookworm-slim
ARG CUDA_VERSION=13.0.1
ARG UBUNTU=24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9

FROM ${UV_IMAGE} AS uv

# ---- toolchains: g++, Python 3.11 with its headers, the environment /opt/venv ------------------------------------
# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS toolchain-cpu
ENV DEBIAN_FRONTEND=noninteractive
# the distribution's compiler and Python; the base image's tag pins the release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ python3.11 python3.11-dev python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU} AS toolchain-cuda
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Python 3.11 (Ubuntu 24.04 has 3.12) as a self-contained build in /opt/python, copied unchanged into the CUDA
# runtime stage, where the environment's interpreter points.
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed
RUN uv python install 3.11 && uv venv --seed --python 3.11 /opt/venv

# ---- build ---------------------------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM toolchain-${VARIANT} AS build
ARG VARIANT
# GPU architectures of the CUDA kernel (read by `python -m adaptiveclick.ops.build`): the data-centre and
# workstation GPUs CUDA 13 supports, plus PTX for later ones. Fewer architectures build faster.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ARG TORCH_VERSION=2.14.1
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_CUDA=https://download.pytorch.org/whl/cu130
# The OpenVINO engine (the `openvino` extra: openvino + nncf, and its MSDA custom op): auto = in the CPU image,
# where the default predictor takes it on the CPUs it was measured faster on (model/fast/defaults.py: AVX-512 with
# bf16; AVX2-only CPUs get torch fp32), not in the CUDA image; yes / no force it.
ARG OPENVINO=auto
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

# torch first, from PyTorch's index for the variant (the CPU wheel is a fraction of the CUDA one); the project's
# torch range (pyproject.toml) is then already met by 2.14.1+cpu / 2.14.1+cu130.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \
    if [ "$VARIANT" = cuda ]; then index="$TORCH_INDEX_CUDA"; else index="$TORCH_INDEX_CPU"; fi \
    && python -m pip install --index-url "$index" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
# adaptiveclick/ links the top-level folders into the one import package
COPY adaptiveclick adaptiveclick
COPY model model
COPY ops ops
COPY evaluation evaluation
COPY backend backend
COPY finetune finetune
COPY annotate annotate
COPY labelstudio labelstudio
COPY storage storage
COPY benchmarks benchmarks
# the project itself (its dependencies are pinned in pyproject.toml), with the kubernetes extra (fine-tunes as
# Jobs on a cluster) and with or without the openvino extra
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-cert \
    extras="kubernetes"; \
    if [ "$OPENVINO" = yes ] || { [ "$OPENVINO" = auto ] && [ "$VARIANT" = cpu ]; }; then extras="openvino,kubernetes"; fi \
    && python -m pip install ".[$extras]"

# From here on the installed package, not the sources in /src, is what `python -m` imports.
# (The project's module names appear on the next two RUN lines only.)
WORKDIR /opt
RUN python -c "import adaptiveclick.cli, adaptiveclick.backend.app, adaptiveclick.finetune.cli, adaptiveclick.annotate.cli"
# The MSDA kernels, built once here into the environment (ops.build looks there at run time, see
# ops.build_cache.installed_root); CUDA: for TORCH_CUDA_ARCH_LIST, without a GPU; the OpenVINO custom op where the
# openvino extra is installed (--openvino auto).
RUN cuda=no; if [ "$VARIANT" = cuda ]; then cuda=yes; fi \
    && ADAPTIVECLICK_CACHE=/opt/venv/share/adaptiveclick python -m adaptiveclick.ops.build --cpu yes --cuda "$cuda" --openvino auto \
    && rm -rf /opt/venv/share/adaptiveclick/torch_extensions/*/*.o \
              /opt/venv/share/adaptiveclick/torch_extensions/*/*/*.o

# ---- runtime -------------------------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM ${BASE_IMAGE} AS runtime-cpu
ENV DEBIAN_FRONTEND=noninteractive
# python3.11: the interpreter /opt/venv was made with (no headers, no compiler)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# NVIDIA's base image: the CUDA runtime's environment for the NVIDIA container toolkit, no compilers
FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu${UBUNTU} AS runtime-cuda
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=toolchain-cuda /opt/python /opt/python

# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS runtime
# libgomp1 (in the variant's stage above): OpenMP of the compiled CPU kernel
# OpenVINO's model conversion sends usage telemetry unless its consent file says 0: declined for the user here.
RUN groupadd --gid 10001 adaptiveclick \
    && useradd --uid 10001 --gid adaptiveclick --create-home --home-dir /home/adaptiveclick adaptiveclick \
    && mkdir -p /var/cache/adaptiveclick /var/lib/adaptiveclick/models /opt/adaptiveclick /home/adaptiveclick/intel \
    && printf 0 > /home/adaptiveclick/intel/openvino_telemetry \
    && chown -R adaptiveclick:adaptiveclick /home/adaptiveclick/intel \
    && chown adaptiveclick:adaptiveclick /var/cache/adaptiveclick /var/lib/adaptiveclick /var/lib/adaptiveclick/models

COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py deploy/ensure_bucket.py /opt/adaptiveclick/

# ADAPTIVECLICK_CACHE: downloaded weights and registry versions (mount a volume to keep them across restarts).
# MODEL_DIR: fine-tune jobs and the default model registry (mount a volume).
# TMPDIR: the tmpfs every container has, so that a read-only root filesystem (`--read-only`, Kubernetes'
# readOnlyRootFilesystem) needs no third mount: the server's temporary files are small (gunicorn's worker heartbeat,
# which gunicorn advises keeping in memory anyway, multiprocessing's sockets).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    ADAPTIVECLICK_CACHE=/var/cache/adaptiveclick MODEL_DIR=/var/lib/adaptiveclick/models TMPDIR=/dev/shm
USER 10001:10001
WORKDIR /var/lib/adaptiveclick
EXPOSE 9090

# start-period: the first start may download weights; failures during it do not count.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["/opt/venv/bin/python", "/opt/adaptiveclick/healthcheck.py", "http://127.0.0.1:9090/health"]

# gunicorn through the product's command: one worker process holding the model (loaded after the fork, never
# preloaded, so CUDA is safe), ADAPTIVECLICK_THREADS threads for I/O, a 120 s worker timeout, 30 s graceful stop.
# One GPU per container: run one container per GPU. No ENTRYPOINT, so nuclio (deploy/cvat) can set its own command.
CMD ["adaptiveclick", "serve", "--host", "0.0.0.0", "--port", "9090"]
