#!/usr/bin/env bash
# Install the project and its whole stack into a virtual environment.
#
#   bash scripts/install.sh            # runtime stack into .venv
#   bash scripts/install.sh --test     # + test tools (pytest, ...)
#
# Environment:
#   SEAS_VENV         venv folder (default: .venv in the repo root)
#   SEAS_WHEEL_CACHE  where the compiled mmcv wheel is kept between runs
#                     (default: ~/.cache/seas-bench/wheels); the ~12 min mmcv build happens once.
#   SEAS_CUDA=1       build mmcv's CUDA ops too (GPU machines with nvcc; see README "GPU install").
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${SEAS_VENV:-$here/.venv}
cache=${SEAS_WHEEL_CACHE:-$HOME/.cache/seas-bench/wheels}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
py=${PYTHON:-python3}
cons=$here/constraints.txt

t0=$(date +%s)
[[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# 1. torch + build tools for mmcv
"${pip[@]}" install -q -c "$cons" "torch===2.13.0" "torchvision===0.28.0" "setuptools>=77,<81" wheel ninja
# 2. mmcv 2.1.0 with compiled ops, built once and cached (keyed on torch + mmcv + cuda flag)
tv=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
key="torch$tv-mmcv2.1.0-cuda${SEAS_CUDA:-0}-$(uname -m)-py$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
wdir=$cache/$key
if ! ls "$wdir"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "[install] building mmcv 2.1.0 with ops against torch $tv (once; ~12 min on 2 cores) -> $wdir"
  mkdir -p "$wdir.tmp"
  if [[ "${SEAS_CUDA:-0}" == 1 ]]; then force=1; else force=0; fi
  MMCV_WITH_OPS=1 FORCE_CUDA=$force MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "${pip[@]}" wheel -q --no-build-isolation --no-deps --no-cache-dir -w "$wdir.tmp" mmcv==2.1.0
  rm -rf "$wdir" && mv "$wdir.tmp" "$wdir"
fi
# 3. everything else, with the pins as constraints
"${pip[@]}" install -q -c "$cons" "$wdir"/mmcv-2.1.0-*.whl
"${pip[@]}" install -q -c "$cons" -e "$here$extras"
echo "[install] done in $(( $(date +%s) - t0 )) s; venv size $(du -sh "$venv" | cut -f1)"
