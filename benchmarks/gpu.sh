#!/usr/bin/env bash
# Every benchmark on CUDA in one call, for the day a GPU is lent (none has been yet: no GPU number exists).
#
#     benchmarks/gpu.sh            # writes benchmarks/results/gpu/*.md, each naming the device
#
# Each script reads MEDSEGSUITE_BENCH_DEVICE (benchmarks/bench_device.py): its backend, models and
# baseline run there, TF32 is off in the benchmark process (equivalence checks compare true fp32), and
# the results file's provenance names the GPU. Per-script time limits keep the whole call under 10
# minutes; a script that fails or runs out of time is reported and the others still run.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${GPU_RESULTS:-benchmarks/results/gpu}
export MEDSEGSUITE_BENCH_DEVICE=${MEDSEGSUITE_BENCH_DEVICE:-cuda}
export PYTHONPATH="$PWD/MedSegSuite${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'benchmarks/gpu.sh: torch sees no CUDA device')" || exit 1
mkdir -p "$OUT"
status=0
run() {  # name, time limit (s), script and its options
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s)"
    if ! timeout "$limit" "$PY" "$@" --out "$OUT/$name.md"; then
        echo "!! $name failed or ran out of time"
        status=1
    fi
}
start=$(date +%s)
run cosam 130 benchmarks/cosam_speed.py --slices every:8 --modes fp32,bf16 --all-slices --compare-overlap
run full_ct 150 benchmarks/full_ct.py --compare-exact
run cosam_interpolation 40 benchmarks/cosam_interpolation.py
run click 80 benchmarks/click_latency.py
run remote 45 benchmarks/remote_latency.py
run scribble 50 benchmarks/scribble_quick.py
run click_under_training 45 benchmarks/click_under_training.py
run tta_speed 35 benchmarks/tta_speed.py --device cuda --repeats 3
run metrics 25 benchmarks/metrics_speed.py  # surface metrics run on the CPU by design
echo "benchmarks/gpu.sh: $(( $(date +%s) - start )) s; results in $OUT"
exit $status
