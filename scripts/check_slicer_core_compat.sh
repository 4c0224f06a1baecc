#!/usr/bin/env bash
# Run the MRML bridge tests on another slicer-core version (default 5.11.0.6, the series trame-slicer
# pins) in a throw-away venv: bash scripts/check_slicer_core_compat.sh [VERSION] [VENV_DIR]
set -euo pipefail
VERSION="${1:-5.11.0.6}"
VENV="${2:-/tmp/slicer-core-$VERSION}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "slicer-core==$VERSION" numpy scipy pytest
cd "$ROOT"
PYTHONPATH="$ROOT/MedSegSuite:$ROOT/Testing/Python" "$VENV/bin/python" -m pytest -q --noconftest \
  -p compat_fixtures -p no:cacheprovider Testing/Python/test_mrml_volumes.py Testing/Python/test_mrml_segments.py \
  Testing/Python/test_mrml_prompts.py Testing/Python/test_mrml_scene.py Testing/Python/test_mrml_crops.py \
  Testing/Python/test_mrml_undo.py
