#!/usr/bin/env bash
# The GPU path in one command: the CuPy tests, the GPU benchmarks against torch on CUDA and the
# conformance suite's torch run on CUDA, within 8 minutes, then a summary.
#
#   benchmarks/gpu_check.sh [WHEELS]          run on a GPU machine, from the checkout
#   benchmarks/gpu_check.sh --prepare WHEELS  download what such a machine lacks (needs an index)
#
# The machine it is written for has Python 3.12 with torch (CUDA), cupy-cuda13x, jax, numba,
# numpy, scipy, rich, pytest and hypothesis, and no package index: normref runs from the
# checkout on PYTHONPATH (no pip install), and the few packages it lacks come as wheels in
# WHEELS (default .gpu-wheels), unpacked into a temporary directory on PYTHONPATH.
# Results and logs go to $GPU_CHECK_OUT (default gpu-check-results/). Exit status: 0 when every
# stage ran and passed, 1 when one failed, 2 without a usable GPU.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
python=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    wheels=${2:?usage: benchmarks/gpu_check.sh --prepare WHEELS}
    # pure-Python packages and jsonschema's one compiled dependency (rpds-py) for CPython 3.12,
    # without their other dependencies (numpy above all), which the machine has
    exec "$python" -m pip download --dest "$wheels" --only-binary=:all: --no-deps \
        --python-version 3.12 --implementation cp --abi cp312 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
        array-api-compat array-api-strict mpmath jsonschema attrs jsonschema-specifications \
        referencing rpds-py typing-extensions
fi

wheels=${1:-.gpu-wheels}
out=${GPU_CHECK_OUT:-gpu-check-results}
mkdir -p "$out"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if [ -d "$wheels" ]; then
    for wheel in "$wheels"/*.whl; do
        [ -e "$wheel" ] && "$python" -m zipfile -e "$wheel" "$site"
    done
fi
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"

if ! "$python" - <<'EOF'
import sys
from benchmarks.devices import missing_gpu
reason = missing_gpu()
if reason is not None:
    print(f"gpu_check: no GPU to run on: {reason}", file=sys.stderr)
    sys.exit(2)
import cupy, torch
props = cupy.cuda.runtime.getDeviceProperties(0)
print(f"gpu_check: {props['name'].decode()}, CuPy {cupy.__version__}, torch {torch.__version__}"
      f" (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}")
EOF
then
    exit 2
fi

declare -a names codes seconds
stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run with a time limit, log, record the status
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "gpu_check: $name ..."
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local code=$?
    names+=("$name")
    codes+=("$code")
    seconds+=($((SECONDS - start)))
    tail -n 5 "$out/$name.log"
}

# the CuPy backend of the registry-driven tests, the CUDA kernels against the generic path,
# and the conformance suite's device option
stage tests 240 "$python" -m pytest -q -p no:randomly -p no:cacheprovider \
    -k "cupy or fused_cuda or test_device" tests/
stage benchmarks 150 "$python" -m benchmarks --device cuda --quick --frameworks torch \
    --repeats 9 --out "$out/benchmarks"
stage conformance 90 "$python" -m conformance run --framework torch --device cuda \
    --json "$out/conformance.json"

echo
echo "gpu_check summary (logs in $out/)"
status=0
for i in "${!names[@]}"; do
    case ${codes[$i]} in
        0) verdict=passed ;;
        124) verdict="stopped at its time limit" ;;
        *) verdict="exit ${codes[$i]}" ;;
    esac
    printf '  %-12s %-28s %4d s\n' "${names[$i]}" "$verdict" "${seconds[$i]}"
    [ "${codes[$i]}" = 0 ] || status=1
done
if [ -f "$out/benchmarks/summary.md" ]; then
    echo
    cat "$out/benchmarks/summary.md"
fi
grep -E "rows|within budget|fails" "$out/conformance.log" | tail -n 5
exit $status
