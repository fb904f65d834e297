#!/usr/bin/env bash
# CI, part of .ci/run (run from the clone's root; .venv made by make setup).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
START=$(date +%s)
# One list of dependencies, as a user installs it: a wheel of the package, then a fresh virtual
# environment per extra (none, studio, metrics, bench, logs, export) holding only the wheel and that extra, where
# the extra's entry points answer --help and their modules import (.ci/extras.py): a dependency
# missing from setup.py fails here. The wheel is pure Python (INADE_NO_EXTENSION=1: make setup
# builds the extension); torch comes once from the local CPU wheel into a shared folder that each
# environment sees through a .pth file, so each installs only the package and its extra (seconds).
TORCH_SPEC="$(.venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])")"
TORCH_DIR="${TMPDIR:-/tmp}/inade-ci-${TORCH_SPEC}"
if [ ! -f "$TORCH_DIR/.done" ]; then
  rm -rf "$TORCH_DIR"
  .venv/bin/python -m pip install -q --target "$TORCH_DIR" "$TORCH_SPEC"
  touch "$TORCH_DIR/.done"
fi
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
INADE_NO_EXTENSION=1 .venv/bin/python -m pip wheel -q --no-deps -w "$WHEELS/dist" .
WHEEL="$(ls "$WHEELS"/dist/inade-*.whl)"
cp -r bench .ci/extras.py "$WHEELS/"  # bench/ is not in the wheel: [bench] serves a clone's bench/
for extra in none studio metrics bench logs export; do
  "$PYTHON" -m venv "$WHEELS/venv-$extra"
  "$WHEELS/venv-$extra/bin/python" -c "import site, sys; open(site.getsitepackages()[0] + '/inade-ci-torch.pth', 'w').write(sys.argv[1] + '\n')" "$TORCH_DIR"
  "$WHEELS/venv-$extra/bin/python" -m pip install -q "$WHEEL$([ "$extra" = none ] || echo "[$extra]")"
  (cd "$WHEELS" && "$WHEELS/venv-$extra/bin/python" extras.py "$extra")
done
echo "extras: every extra installs and runs ($(( $(date +%s) - START )) s)"
