#!/usr/bin/env bash
# The numerics matrix that CI runs after `make test` (`make test-matrix`; README "Tests"):
#
#   isa       the numerics tests (backbones, detector, ops, images) once per switch that makes this CPU take
#             another CPU's code paths: oneDNN capped at SSE4.1, AVX2 and AVX-512 (a cap above what the CPU has
#             changes nothing) and ATen's vectorised kernels at their non-vectorised default. Tolerances follow
#             hetmm_fast/testing.py, so every run must pass unchanged.
#   portable  the extension built without -march=native (HETMM_FAST_PORTABLE=1, CPU kernels only) into
#             build/portable, its Python tests run against that build, and the C++ tests built the same way.
#
# Usage: tests/matrix.sh [isa] [portable]   (both when none is named). Needs `make install` first.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
PYTEST=(-m pytest -p no:cacheprovider)
NUMERICS=(tests/test_backbones.py tests/test_detector.py tests/test_window_match.py tests/test_engine_cpu.py
          tests/test_pts_select.py tests/test_optics_labels.py tests/test_postprocess.py tests/test_data.py)
EXTENSION=(tests/test_window_match.py tests/test_engine_cpu.py tests/test_pts_select.py tests/test_optics_labels.py
           tests/test_detector.py)
JOBS="${MAX_JOBS:-2}"

run_isa() {
    for setting in ONEDNN_MAX_CPU_ISA=SSE41 ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX512_CORE \
                   ATEN_CPU_CAPABILITY=default; do
        echo "== numerics tests with $setting"
        env "$setting" "$PY" "${PYTEST[@]}" "${NUMERICS[@]}"
    done
}

run_portable() {
    local out="$ROOT/build/portable"
    echo "== extension built without -march=native in $out"
    mkdir -p "$out"
    HETMM_FAST_PORTABLE=1 HETMM_FAST_NO_CUDA=1 MAX_JOBS="$JOBS" \
        "$PY" setup.py -q build_ext --build-temp "$out/tmp" --build-lib "$out/lib" >"$out/build.log" 2>&1 \
        || { tail -n 40 "$out/build.log"; exit 1; }
    # A copy of the package holding the portable library; run from its folder, it is the hetmm_fast imported
    # (the current directory comes first on sys.path, before the editable install's finder).
    rm -rf "$out/pkg" && mkdir -p "$out/pkg"
    cp -r hetmm_fast "$out/pkg/"
    find "$out/pkg" -name __pycache__ -type d -prune -exec rm -rf {} +
    rm -f "$out"/pkg/hetmm_fast/_C*.so
    cp "$out"/lib/hetmm_fast/_C*.so "$out/pkg/hetmm_fast/"
    (cd "$out/pkg" && "$PY" - <<'PY'
import hetmm_fast, hetmm_fast._engine_cpu as e
assert hetmm_fast.__file__.startswith(__import__("os").getcwd()), hetmm_fast.__file__
features = e.build_features()
print(f"portable build: {hetmm_fast._C.__file__}, features {sorted(features) or 'baseline'}")
assert not features & {"avx2", "fma", "avx512f"}, f"the portable build was compiled for {sorted(features)}"
PY
    )
    echo "== extension tests on the portable build"
    # A load failure of this build would quietly test the reference instead: make hetmm_fast's warning an error.
    (cd "$out/pkg" && "$PY" "${PYTEST[@]}" -W "error:hetmm_fast:RuntimeWarning" --rootdir="$ROOT" \
        "${EXTENSION[@]/#/$ROOT/}")
    echo "== C++ tests built without -march=native"
    cmake -S . -B build/cmake-portable -DCMAKE_BUILD_TYPE=Release -DHETMM_FAST_PORTABLE=ON \
        -DHETMM_EMULATOR_SANITIZERS=OFF >/dev/null
    cmake --build build/cmake-portable -j "$JOBS" >/dev/null
    ctest --test-dir build/cmake-portable --output-on-failure
}

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(isa portable)
for part in "${parts[@]}"; do
    case "$part" in
        isa) run_isa ;;
        portable) run_portable ;;
        *) echo "tests/matrix.sh: unknown part '$part' (isa, portable)" >&2; exit 2 ;;
    esac
done
