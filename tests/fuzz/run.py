"""Run one fuzz harness for a wall-clock budget, restarting it after each crash, timeout or OOM it reports.

    python tests/fuzz/run.py fuzz_image.py --seconds 1800 --work /tmp/fuzz_image --seeds /tmp/seeds_image

WORK gets ``corpus/`` (libFuzzer's growing corpus, reused across restarts), ``artifacts/`` (libFuzzer's crash-*,
timeout-*, oom-* inputs), ``findings/`` (the harness's own records, see findings.py) and ``summary.json``: wall
time, executions, final coverage (libFuzzer's ``cov`` = edges, ``ft`` = features), corpus size, restarts, findings.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("harness")
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", type=Path, required=True)
    ap.add_argument("--timeout", type=int, default=60, help="libFuzzer per-input timeout, seconds")
    ap.add_argument("--rss-mb", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=65536)
    args = ap.parse_args()
    corpus, artifacts, findings = (args.work / d for d in ("corpus", "artifacts", "findings"))
    for d in (corpus, artifacts, findings):
        d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HETMM_FUZZ_FINDINGS=str(findings))
    start = time.time()
    total_execs, restarts, cov, ft, sessions = 0, 0, None, None, []
    log = open(args.work / "fuzz.log", "a")
    while (left := args.seconds - (time.time() - start)) > 5:
        cmd = [sys.executable, str(HERE / args.harness), str(corpus), str(args.seeds), f"-timeout={args.timeout}",
               f"-rss_limit_mb={args.rss_mb}", f"-max_len={args.max_len}", f"-max_total_time={int(left)}",
               f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-close_fd_mask=1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                errors="replace")
        execs = 0
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if m := re.match(r"#(\d+)\s", line):
                execs = max(execs, int(m.group(1)))
            if m := re.search(r"\bcov: (\d+) ft: (\d+)", line):
                cov, ft = int(m.group(1)), int(m.group(2))
            if m := re.match(r"stat::number_of_executed_units: (\d+)", line):
                execs = max(execs, int(m.group(1)))
        rc = proc.wait()
        total_execs += execs
        sessions.append({"rc": rc, "execs": execs, "ended_s": round(time.time() - start, 1)})
        if rc != 0:
            restarts += 1
        summary = {
            "harness": args.harness, "wall_s": round(time.time() - start, 1), "executions": total_execs,
            "cov_edges": cov, "features": ft, "corpus_files": len(list(corpus.iterdir())), "restarts": restarts,
            "artifacts": sorted(p.name for p in artifacts.iterdir()),
            "findings": sorted(p.name for p in findings.iterdir() if p.suffix == ".txt"), "sessions": sessions,
        }
        (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
