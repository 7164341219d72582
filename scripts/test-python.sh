#!/usr/bin/env bash
# Builds the Python package (bindings/python) and runs its pytest suite: installs the pinned test
# dependencies (bindings/python/requirements-test.txt) into .venv-python (git-ignored; a stamp
# makes it quick when present), builds the extension module with cargo in the test profile (the
# artifacts `cargo test --workspace` already built are reused: only the bindings crate and pyo3
# compile), copies it next to the Python sources and puts them on the venv's path, then pytest.
#
# Then the Ray tests (`-m ray`, a local Ray cluster: about 40 s) with ray[data,serve] pinned in
# bindings/python/requirements-ray.txt, installed into .venv-ray (about 30 s and 770 MB once);
# FUSEBERT_RAY_TESTS=0 skips them. `--venvs` alone only makes the venvs. Extra arguments
# go to pytest. The wheel users install (`pip install ./bindings/python`) is the same code
# built by maturin in the release profile.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
pkg="$root/bindings/python"

# venv DIR REQUIREMENTS: a venv with the pinned requirements, the package's sources on its path.
venv() {
  local dir="$1" reqs="$2"
  local stamp="$dir/.fusebert-$(sha256sum "$reqs" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    [ -x "$dir/bin/pip" ] || "$py" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
    touch "$stamp"
  fi
  local site
  site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # the sources in place (what `maturin develop` does), plus the tests' helpers for Ray workers
  echo "$pkg/python" > "$site/fusebert-dev.pth"
}

# --venvs: only make the two venvs (scripts/test.sh runs this in the background while cargo
# builds: pip waits on the network, not the CPU)
if [ "${1:-}" = "--venvs" ]; then
  venv "$root/.venv-python" "$pkg/requirements-test.txt"
  if [ "${FUSEBERT_RAY_TESTS:-1}" = 1 ]; then venv "$root/.venv-ray" "$pkg/requirements-ray.txt"; fi
  exit 0
fi

echo "== Python package: .venv-python"
venv "$root/.venv-python" "$pkg/requirements-test.txt"
echo "== Python package: extension module (cargo, test profile)"
# --workspace: the feature resolution `cargo test --workspace` used (with `-p fusebert-python`
# alone, serde, tokenizers and every fusebert crate resolve other features and compile again)
PYO3_BUILD_EXTENSION_MODULE=1 cargo build --locked --profile test --workspace --lib --quiet
# a new file renamed into place: a running Python that has the old one mapped is not disturbed
cp "$root/target/debug/lib_fusebert.so" "$pkg/python/fusebert/_fusebert.abi3.so.tmp"
mv -f "$pkg/python/fusebert/_fusebert.abi3.so.tmp" "$pkg/python/fusebert/_fusebert.abi3.so"
# the CLI, for the tests that compare the two front ends (already built by `cargo test`)
[ -x "$root/target/debug/fusebert" ] || cargo build --locked --profile test -p fusebert-cli --quiet
echo "== pytest bindings/python/tests"
# pytest ARGS...: with a selection given (-k ...), "no test selected" (exit 5) is not a failure
run_pytest() {
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 5 ] && [ "$selection" = 1 ]; then rc=0; fi
  return "$rc"
}
selection=$([ "$#" -gt 0 ] && echo 1 || echo 0)
run_pytest "$root/.venv-python/bin/python" -m pytest "$pkg/tests" -q -m "not ray" -p no:cacheprovider "$@"
if [ "${FUSEBERT_RAY_TESTS:-1}" = 1 ]; then
  echo "== pytest -m ray (.venv-ray)"
  venv "$root/.venv-ray" "$pkg/requirements-ray.txt"
  run_pytest "$root/.venv-ray/bin/python" -m pytest "$pkg/tests/test_ray.py" -q -m ray -p no:cacheprovider --disable-warnings "$@"
fi
