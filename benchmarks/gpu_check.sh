#!/usr/bin/env bash
# One-command GPU check of the CUDA (and Triton) engines, for a machine with a CUDA GPU and no internet:
#
#   bash benchmarks/gpu_check.sh              # build in place against this machine's torch, test, benchmark
#   bash benchmarks/gpu_check.sh --dry-run    # no GPU: syntax, imports, the CPU-runnable parts (no build)
#
# Steps (each logged, timed and bounded by `timeout`; a failing step is recorded and the script goes on to the
# summary): environment -> build (`setup.py build_ext --inplace`, TORCH_CUDA_ARCH_LIST=9.0 unless set, MAX_JOBS=16)
# -> pytest of the CUDA test files (tests/test_*cuda*.py) -> benchmarks/bench_cuda.py -> benchmarks/sanitize_cuda.py
# under compute-sanitizer memcheck (every case) -> pytest of the Triton test files (tests/test_*triton*.py, autotuning
# over GPU_CHECK_TRITON_CONFIGS, default "0,5", see hetmm_fast.triton.window_match.tuned_configs) -> racecheck and
# synccheck (the --quick cases); the last four only while time is left -> summary.
# Deadline: every step's limit is cut to what is left of GPU_CHECK_DEADLINE (default 465 s, less 15 s kept for the
# summary), so the whole run ends within 8 minutes on an H200 (build ~2-3 min); the sanitizer and Triton steps are
# skipped, and say so, when too little is left. Writes gpu_check_<stamp>.json / .md, bench_cuda_<stamp>.json and the
# step logs' tails to benchmarks/results/ (a dry run: a temporary folder; GPU_CHECK_RESULTS overrides both) and, when
# $OUT is set, the same files (at most 8) to $OUT. A dry run runs the sanitizer cases on the cpu backend instead.
# Environment: PYTHON (default python3), GPU_CHECK_QUICK=1 (headline benchmarks only), GPU_CHECK_TRITON_CONFIGS,
# GPU_CHECK_DEADLINE and GPU_CHECK_TIMEOUT_{BUILD,TESTS,TRITON,BENCH,MEMCHECK,RACECHECK,SYNCCHECK} (seconds).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# A dry run writes to a temporary folder unless GPU_CHECK_RESULTS says where: its files are not results.
if [ -n "${GPU_CHECK_RESULTS:-}" ]; then RESULTS=$GPU_CHECK_RESULTS
elif [ "$DRY" = 1 ]; then RESULTS=$(mktemp -d)
else RESULTS="$ROOT/benchmarks/results"; fi
mkdir -p "$RESULTS"
LOGS=$(mktemp -d)
START=$(date +%s)
STEPS_FILE="$LOGS/steps.tsv"
: > "$STEPS_FILE"
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
[ -d /usr/local/cuda ] && export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

say() { echo "[gpu_check $(date +%T) +$(( $(date +%s) - START ))s] $*"; }

DEADLINE=${GPU_CHECK_DEADLINE:-465}

# step NAME TIMEOUT_S FUNCTION [MIN_S]: runs the shell function in a child bash with a time limit, records
# "name<TAB>status<TAB>seconds" and never fails the script. The limit is cut to what is left before the deadline
# (at least 30 s); with MIN_S, the step is skipped (and recorded so) when less than MIN_S seconds are left.
step() {
  local name=$1 limit=$2 fn=$3 min=${4:-0}
  local t0 rc left
  left=$(( DEADLINE - 15 - ($(date +%s) - START) ))
  if [ "$min" -gt 0 ] && [ "$left" -lt "$min" ]; then
    say "step $name skipped: ${left}s left before the ${DEADLINE}s deadline, it needs ${min}s"
    printf '%s\tskipped (%ss left before the deadline)\t0\n' "$name" "$left" >> "$STEPS_FILE"
    return 0
  fi
  if [ "$left" -lt "$limit" ]; then limit=$(( left > 30 ? left : 30 )); fi
  t0=$(date +%s)
  say "step $name (limit ${limit}s)"
  set +e
  STEP_DEADLINE=$(( t0 + limit )) timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $fn" \
    > "$LOGS/$name.log" 2>&1
  rc=$?
  set -e
  local secs=$(( $(date +%s) - t0 ))
  local status=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="timeout after ${limit}s"
  elif [ "$rc" -eq 99 ]; then status="unavailable (see log)"
  elif [ "$rc" -ne 0 ]; then status="failed (exit $rc)"; fi
  printf '%s\t%s\t%s\n' "$name" "$status" "$secs" >> "$STEPS_FILE"
  tail -n 25 "$LOGS/$name.log" | sed "s/^/  [$name] /"
  say "step $name: $status in ${secs}s"
}

env_info() {
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi: not found"
  command -v nvcc > /dev/null && nvcc --version | tail -n 2 || { [ -x "${CUDA_HOME:-/nonexistent}/bin/nvcc" ] && "$CUDA_HOME/bin/nvcc" --version | tail -n 2; } || echo "nvcc: not found"
  "$PY" - << 'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| torch CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs", round(p.total_memory / 2**30, 1), "GiB")
for mod in ("triton", "sklearn", "torchvision", "pytest"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as exc:  # noqa: BLE001
        print(mod, "missing:", exc)
EOF
}

build() {
  rm -f hetmm_fast/_C*.so
  HETMM_FAST_FORCE_CUDA=1 "$PY" setup.py build_ext --inplace
  "$PY" -c "import torch, hetmm_fast; import hetmm_fast._C; print('CUDA kernels:', torch._C._dispatch_has_kernel_for_dispatch_key('hetmm::window_match', 'CUDA')); print(hetmm_fast.available_backends())"
  # Registers, shared memory and spills of the fused kernels as built here (compare with benchmarks/results/README.md).
  if command -v cuobjdump > /dev/null; then
    cuobjdump --dump-resource-usage hetmm_fast/_C*.so 2>/dev/null | awk '/arch = /{arch=$NF}
      /Function .*window_match_kernel/{f=$0; sub(/.*INS0_[0-9]+/, "", f); sub(/Path.*/, "", f); getline;
        match($0, /REG:[0-9]+ STACK:[0-9]+/); print "window_match_kernel", arch, f, substr($0, RSTART, RLENGTH)}' || true
  fi
}

# run_tests WORD: the test files whose name contains WORD (cuda, triton), junit XML to $LOGS/pytest_WORD.xml.
run_tests() {
  local files=()
  local f
  for f in tests/test_*"$1"*.py; do [ -f "$f" ] && files+=("$f"); done
  if [ "${#files[@]}" -eq 0 ]; then echo "no tests/test_*$1*.py files"; return 0; fi
  # Tests that would start in the step's last 25 s are skipped (tests/conftest.py), so pytest ends on its own and
  # writes its report; a killed pytest writes none.
  HETMM_TEST_DEADLINE=$(( STEP_DEADLINE - 25 )) \
    "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 --junitxml="$LOGS/pytest_$1.xml" "${files[@]}"
}

run_bench() {
  local extra=()
  [ "${GPU_CHECK_QUICK:-0}" = "1" ] && extra+=(--quick)
  [ "$DRY" = "1" ] && extra+=(--dry-run)
  "$PY" benchmarks/bench_cuda.py --json "$RESULTS/bench_cuda_$STAMP.json" "${extra[@]}"
}

# compute-sanitizer on PATH or in the toolkit; empty when absent (the sanitizer steps are then skipped).
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ]; then
  SANITIZER="${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer"
fi

# run_sanitizer TOOL [ARGS...]: benchmarks/sanitize_cuda.py under compute-sanitizer's TOOL; exit 86 when the tool
# reports an error, 1 when a case mismatches. API errors are not reported: torch probes the driver with calls that
# are meant to fail, and the extension checks the result of every call it makes.
# Exit 99 (step status "unavailable") when the sanitizer refuses the device, as it does under gVisor.
run_sanitizer() {
  local tool=$1 rc=0
  shift
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 86 --report-api-errors no \
    --print-limit 20 "$PY" benchmarks/sanitize_cuda.py "$@" 2>&1 | tee "$LOGS/sanitizer_$tool.out" || rc=$?
  if grep -q "Device not supported" "$LOGS/sanitizer_$tool.out"; then
    echo "compute-sanitizer refused this device (it does under gVisor): nothing was checked"
    return 99
  fi
  return "$rc"
}

export PY DRY LOGS RESULTS STAMP SANITIZER
export -f env_info build run_tests run_bench run_sanitizer

step env 60 env_info
if [ "$DRY" = "1" ]; then
  say "dry run: build skipped (using whatever hetmm_fast/_C*.so is present)"
  printf 'build\tskipped (dry run)\t0\n' >> "$STEPS_FILE"
else
  step build "${GPU_CHECK_TIMEOUT_BUILD:-180}" build
fi
# sanitize TOOL LIMIT MIN [ARGS...]: one compute-sanitizer step (on a dry run, the cases on the cpu backend, once).
sanitize() {
  local tool=$1 limit=$2 min=$3
  shift 3
  if [ "$DRY" = "1" ]; then
    if [ "$tool" = memcheck ]; then step sanitize_cases 60 "\"\$PY\" benchmarks/sanitize_cuda.py --device cpu"; fi
  elif [ -z "$SANITIZER" ]; then
    printf '%s\tskipped (no compute-sanitizer)\t0\n' "sanitize_$tool" >> "$STEPS_FILE"
  else
    step "sanitize_$tool" "$limit" "run_sanitizer $tool $*" "$min"
  fi
}

# Most important first: CUDA parity, the CUDA targets, memory errors, then the Triton engine (its tests autotune over
# GPU_CHECK_TRITON_CONFIGS, two of the eight tiles, to spend seconds rather than minutes compiling), then races.
step tests_cuda "${GPU_CHECK_TIMEOUT_TESTS:-100}" "run_tests cuda"
step bench "${GPU_CHECK_TIMEOUT_BENCH:-140}" run_bench
sanitize memcheck "${GPU_CHECK_TIMEOUT_MEMCHECK:-90}" 40
step tests_triton "${GPU_CHECK_TIMEOUT_TRITON:-150}" \
  "export HETMM_TRITON_CONFIGS=${GPU_CHECK_TRITON_CONFIGS:-0,5}; run_tests triton" 45
sanitize racecheck "${GPU_CHECK_TIMEOUT_RACECHECK:-75}" 40 --quick
sanitize synccheck "${GPU_CHECK_TIMEOUT_SYNCCHECK:-45}" 30 --quick

say "summary"
set +e
"$PY" - "$STEPS_FILE" "$LOGS" "$RESULTS" "$STAMP" "$DRY" << 'EOF'
import json, platform, sys, xml.etree.ElementTree as ET
from pathlib import Path

steps_file, logs, results, stamp, dry = sys.argv[1:]
logs, results = Path(logs), Path(results)
steps = [dict(zip(("step", "status", "seconds"), line.split("\t"))) for line in Path(steps_file).read_text().splitlines()]
summary = {"stamp": stamp, "dry_run": dry == "1", "steps": steps}
try:
    import torch
    summary["torch"], summary["torch_cuda"] = torch.__version__, torch.version.cuda
    summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as exc:  # noqa: BLE001
    summary["torch"] = f"import failed: {exc}"
summary["python"], summary["host"] = platform.python_version(), platform.node()
failed_tests = []
summary["tests"] = {}
for word in ("cuda", "triton"):
    junit = logs / f"pytest_{word}.xml"
    if not junit.exists():
        continue
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    summary["tests"][word] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    for case in suite.iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                failed_tests.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                     "message": (el.get("message") or "")[:500]})
summary["failed_tests"] = failed_tests
bench_path = results / f"bench_cuda_{stamp}.json"
bench = json.loads(bench_path.read_text()) if bench_path.exists() else {}
summary["headline"] = bench.get("headline", {})
summary["detector"] = bench.get("detector", [])
summary["pts"] = bench.get("pts", [])
summary["agreement"] = bench.get("agreement", {})
summary["bench_skipped"] = bench.get("skipped")
summary["bench_skipped_sections"] = bench.get("skipped_sections", [])
summary["bench_unfinished_rows"] = bench.get("rows_of_unfinished_section", [])
# compute-sanitizer steps: the tool's error summary, the cases' verdict and the first reports (kernel, access, where).
summary["sanitizer"] = {}
for st in steps:
    log = logs / f"{st['step']}.log"
    if not st["step"].startswith("sanitize") or not log.exists():
        continue
    lines = log.read_text(errors="replace").splitlines()
    reports = [ln for ln in lines if ln.startswith("=========") and "COMPUTE-SANITIZER" not in ln
               and "ERROR SUMMARY" not in ln and ln.strip("= ")]
    summary["sanitizer"][st["step"]] = {
        "status": st["status"],
        "error_summary": next((ln.strip("= ") for ln in lines if "ERROR SUMMARY" in ln), None),
        "cases": next((ln for ln in lines if " cases passed " in ln), None),
        "failed_cases": [ln for ln in lines if ln.startswith("FAIL ")][:10],
        "first_reports": reports[:30],
    }
(results / f"gpu_check_{stamp}.json").write_text(json.dumps(summary, indent=1))

t = bench.get("targets", {})
h = summary["headline"]
def fmt(v, spec=".3g"):
    return format(v, spec) if isinstance(v, (int, float)) else str(v)
md = [f"# GPU check {stamp}", "",
      f"GPU: {summary.get('gpu')} | torch {summary.get('torch')} (CUDA {summary.get('torch_cuda')}) | "
      f"Python {summary['python']} | host {summary['host']}" + (" | DRY RUN" if dry == "1" else ""), "",
      "| step | status | seconds |", "|---|---|---|"]
md += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in steps]
for word, counts in summary["tests"].items():
    md += ["", f"Tests ({word}): " + ", ".join(f"{k} {v}" for k, v in counts.items())]
md += [f"- FAILED {f['test']}: {f['message']}" for f in failed_tests]
if h:
    md += ["", "## window_match (C=256, 64x64, N=60, 13x7, B=32, fp16)", "",
           f"- fused: {fmt(h.get('fused_fp16_ms'))} ms, {fmt(h.get('fused_fp16_useful_tflops'))} useful TFLOP/s",
           f"- speedup vs naive kernel: {fmt(h.get('speedup_vs_naive'))}x (target >= {t.get('naive_speedup')}x)",
           f"- fraction of fp16 GEMM ({fmt(h.get('gemm_fp16_tflops'))} TFLOP/s): {fmt(h.get('fraction_of_gemm'))} "
           f"(target >= {t.get('gemm_fraction')})",
           f"- templates pixel-major (as the detector keeps them): {fmt(h.get('fused_fp16_pixel_major_templates_ms'))} "
           f"ms, fraction of GEMM {fmt(h.get('fraction_of_gemm_pixel_major_templates'))}",
           f"- speedup vs PyTorch reference: {fmt(h.get('speedup_vs_reference'))}x",
           "- ms by warps per block (tuning): " + ", ".join(f"{k}: {fmt(v)}" for k, v in
                                                            h.get("fp16_ms_by_max_warps", {}).items())]
    md += [f"- batch 1, {case}: ms with tiles split among blocks (auto) {fmt(v.get('auto'))}, one block per tile "
           f"{fmt(v.get('1'))}" for case, v in h.get("b1_fp16_ms_by_splits", {}).items()]
    md += ["", "| case | variant | backend | ms | useful TFLOP/s | max err |", "|---|---|---|---|---|---|"]
    for r in bench.get("window_match", []):
        md.append(f"| {r.get('case')} | {r.get('variant', '')} | {r.get('backend')} | {fmt(r.get('median_ms'))} | "
                  f"{fmt(r.get('useful_tflops', r.get('tflops')))} | {fmt(r.get('max_err', ''))} |"
                  + (f" ERROR {r['error'][:200]}" if "error" in r else "")
                  + (" BITS DIFFER from the automatic configuration" if r.get("equal_to_auto") is False else ""))
for r in summary["detector"]:
    md += ["", f"## detector ({r.get('backbone')} in {r.get('backbone_dtype')}, {r.get('preset')}, templates "
               f"{r.get('dtype')}, fp32 {r.get('fp32_precision')})", ""]
    if "error" in r:
        md.append(f"ERROR {r['error'][:500]}")
    else:
        md += [f"- anomaly maps, batch 32: {fmt(r.get('anomaly_map_img_per_s'))} img/s "
               f"(target >= {t.get('detector_img_per_s')}); batch-1 latency {fmt(r.get('anomaly_map_latency_ms_b1'))} ms",
               f"- predict() end to end: {fmt(r.get('predict_img_per_s'))} img/s, batch-1 {fmt(r.get('predict_latency_ms_b1'))} ms",
               f"- anomaly maps, batch 1 as a CUDA graph: {fmt(r.get('anomaly_map_latency_ms_b1_cuda_graph'))} ms "
               f"(max diff to eager {fmt(r.get('cuda_graph_max_abs_diff'))}{'; ' + r['cuda_graph_error'] if r.get('cuda_graph_error') else ''})",
               f"- window_match backends per layer: {r.get('window_match_backends')}; maps finite: {r.get('maps_finite')}"]
for r in summary["pts"]:
    md += ["", f"## PTS-60, N={r.get('N')}, three layers", ""]
    md.append(f"ERROR {r['error'][:500]}" if "error" in r else
              f"- {fmt(r.get('seconds_total'))} s total (target < {t.get('pts_category_s')} s); per layer "
              + ", ".join(fmt(x) for x in r.get("seconds_per_layer", [])))
a = summary["agreement"]
if a:
    md += ["", "## Agreement with the CPU engine (same inputs)", ""]
    md.append(f"ERROR {a['error'][:500]}" if "error" in a else
              f"- pts_select: {fmt(a.get('pts_identical_pixel_fraction'))} of {a.get('pts_pixels')} pixels identical "
              f"(vs {a.get('pts_reference')}); optics_labels: {fmt(a.get('optics_identical_fraction'))} of "
              f"{a.get('optics_problems')} problems identical (vs {a.get('optics_reference')})")
if summary["sanitizer"]:
    md += ["", "## compute-sanitizer (benchmarks/sanitize_cuda.py)", ""]
    for name, r in summary["sanitizer"].items():
        md.append(f"- {name}: {r['status']}; {r['error_summary'] or 'no error summary'}; {r['cases'] or 'no verdict'}")
        md += [f"  - {ln}" for ln in r["failed_cases"]]
        md += [f"  - `{ln[:300]}`" for ln in r["first_reports"][:12]]
if summary["bench_skipped"]:
    md += ["", f"Benchmarks skipped: {summary['bench_skipped']}"]
if summary["bench_unfinished_rows"]:
    md += ["", "The benchmark stopped inside a section (timeout?); the rows it had finished:", ""]
    md += ["- " + json.dumps(r)[:600] for r in summary["bench_unfinished_rows"]]
if summary["bench_skipped_sections"]:
    md += ["", "Benchmark sections skipped: " + "; ".join(summary["bench_skipped_sections"])]
(results / f"gpu_check_{stamp}.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
rc=$?
set -e
[ "$rc" -ne 0 ] && say "summary writer failed (exit $rc)"

for name in build tests_cuda tests_triton; do
  [ -f "$LOGS/$name.log" ] && tail -n 200 "$LOGS/$name.log" > "$RESULTS/gpu_check_${STAMP}_$name.log"
done
for name in sanitize_cases sanitize_memcheck sanitize_racecheck sanitize_synccheck; do
  [ -f "$LOGS/$name.log" ] && { echo "### $name"; tail -n 150 "$LOGS/$name.log"; }
done > "$LOGS/sanitize_all.log"
[ -s "$LOGS/sanitize_all.log" ] && cp "$LOGS/sanitize_all.log" "$RESULTS/gpu_check_${STAMP}_sanitize.log"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  for f in "$RESULTS/gpu_check_$STAMP.md" "$RESULTS/gpu_check_$STAMP.json" "$RESULTS/bench_cuda_$STAMP.json" \
           "$RESULTS/gpu_check_${STAMP}_build.log" "$RESULTS/gpu_check_${STAMP}_tests_cuda.log" \
           "$RESULTS/gpu_check_${STAMP}_tests_triton.log" "$RESULTS/gpu_check_${STAMP}_sanitize.log"; do
    [ -f "$f" ] && cp "$f" "$OUT/"
  done
fi
say "done in $(( $(date +%s) - START ))s; results in $RESULTS (stamp $STAMP)"
awk -F'\t' '$2 != "ok" && $2 !~ /^(skipped|unavailable)/ {bad = 1} END {exit bad}' "$STEPS_FILE"
