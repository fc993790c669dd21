#!/usr/bin/env bash
# The GPU device check: on one GPU, in at most 8 minutes, every check that needs CUDA, one JSON per benchmark.
#
#   1. tests      pytest -m gpu tests/   (tests/test_gpu.py and any other test marked gpu)   -> device_tests.json
#   2. training   benchmarks/device_train.py: images/s and MFU of the 80×80 BF-UNet at batch 512, fp32, bf16 and
#                 bf16 + channels_last + compile, each with and without the determinism flags -> device_train.json
#   3. evaluation benchmarks/device_eval.py: sampler samples/s; 80×80 Jacobian time, eigh time and homogeneity
#                 error with TF32 on and off                                                  -> device_eval.json
#   4. quickstart benchmarks/device_quickstart.py: `gdm run configs/quickstart.yaml` with trainer.accelerator=gpu
#                 end to end, beside the plan's estimate                                      -> device_quickstart.json
#   5. bench_train.py --quick through its own CLI (its bf16 + channels_last + compile row; last, skipped when the
#                 deadline is near)                                                           -> bench_train.json
#   and device_check.json: the device, each stage's exit status and seconds; device_check.log: all output.
# JSONs go to $OUT, or benchmarks/results/ when OUT is unset. Each stage is bounded by what is left of the
# 8 minutes (DEADLINE_S); a failed stage is recorded and the others still run; the exit status is 1 if any failed.
#
# The GPU machine has no network; torch (with CUDA), Lightning, numpy, matplotlib, scipy, scikit-image and pytest
# are installed there (python3 is Python 3.12). The rest of gdm's dependencies travel as wheels in .whl/:
#   here, once, in the repository root (with network):
#     echo /.whl/ >> .git/info/exclude
#     bash benchmarks/device_check.sh wheels        # pip download into .whl/ (about 25 MB)
#   then on the GPU machine, with .whl carried along (device run: carry [".whl"]):
#     bash benchmarks/device_check.sh               # installs .whl/*.whl with --no-index, then runs the checks
# SMOKE=1 runs every stage on the CPU with tiny sizes in about a minute (tests/test_device_check.py), so the
# script cannot rot where no GPU is; PYTHON names the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
OUT=${OUT:-benchmarks/results}
DEADLINE_S=${DEADLINE_S:-480}
# Missing on the GPU machine, which ships torch but not gdm's other dependencies; versions as in the development venv. wandb and the
# packages after it are wandb's own dependencies (GPU tests and the quickstart write offline W&B runs); protobuf
# travels too, since wandb needs 5 ≤ protobuf < 8 and the machine's own version is not known here.
WHEELS="submitit==1.5.4 omegaconf==2.4.0 webdataset==1.0.2 braceexpand==0.1.7 wandb==0.31.0 cwevals==0.0.1b1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 platformdirs==4.14.9
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-http-transport==0.66b2
  opentelemetry-exporter-otlp-common==0.66b2 googleapis-common-protos==1.76.0 distro==1.9.0 sniffio==1.3.1
  protobuf==7.36.2"

if [ "${1:-}" = wheels ]; then  # here: download for the GPU machine's Python 3.12 on x86-64 Linux
  exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS
fi

mkdir -p "$OUT"
LOG="$OUT/device_check.log"
: > "$LOG"
START=$(date +%s)
STAGES=()
if [ "$SMOKE" != 1 ] && ls .whl/*.whl > /dev/null 2>&1; then  # the wheels are for the GPU machine's Python 3.12
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gdm-site \
    .whl/*.whl >> "$LOG" 2>&1 || { echo "device_check: installing .whl/ failed (see $LOG)"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/gdm-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 WANDB_SILENT=true
DEVICE=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')") \
  || { echo "device_check: $PYTHON cannot import torch"; exit 1; }
echo "device_check: $DEVICE, smoke=$SMOKE, JSON to $OUT" | tee -a "$LOG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
smoke_flag() { [ "$SMOKE" = 1 ] && echo --smoke; }

# stage NAME BUDGET_S COMMAND...: run COMMAND for at most BUDGET_S and what is left before the deadline
stage() {
  local name=$1 budget=$2; shift 2
  local left=$((DEADLINE_S - ($(date +%s) - START) - 5)) t0 rc
  [ "$left" -lt "$budget" ] && budget=$left
  t0=$(date +%s)
  if [ "$budget" -lt 10 ]; then
    rc=skipped
  else
    echo "== $name (at most ${budget}s): $*" >> "$LOG"
    timeout --kill-after=10 "$budget" "$@" >> "$LOG" 2>&1
    rc=$?
  fi
  STAGES+=("$name $rc $(($(date +%s) - t0))")
  echo "device_check: $name -> $rc ($(($(date +%s) - t0)) s)"
}

gpu_tests() {  # pytest's counts as JSON; on a CPU every gpu test skips (SMOKE: tests/test_gpu.py alone, faster)
  local where=tests; [ "$SMOKE" = 1 ] && where=tests/test_gpu.py
  "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu "$where" --continue-on-collection-errors \
    --junitxml="$WORK/junit.xml"
  local rc=$?
  "$PYTHON" - "$WORK/junit.xml" "$OUT/device_tests.json" "$rc" <<'EOF'
import json, os, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
failed = [c.get("classname", "") + "::" + c.get("name", "") for c in suite.iter("testcase")
          if c.find("failure") is not None or c.find("error") is not None]
json.dump({"benchmark": "device_tests", "device": os.environ["DEVICE"], "command": "pytest -m gpu", "returncode": int(sys.argv[3]),
           **counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
           "failed": failed, "seconds": float(suite.get("time", 0))}, open(sys.argv[2], "w"), indent=2)
EOF
  return "$rc"
}

bench_train() {  # benchmarks/bench_train.py through its CLI; SMOKE only checks that it still has --quick
  if [ "$SMOKE" = 1 ]; then
    grep -q -- '"--quick"' benchmarks/bench_train.py
  else
    "$PYTHON" benchmarks/bench_train.py --quick > "$OUT/bench_train.json"
  fi
}

export PYTHON SMOKE OUT WORK DEVICE
export -f gpu_tests bench_train  # `timeout` runs them in a fresh bash
stage tests 150 bash -c gpu_tests
stage train 150 "$PYTHON" benchmarks/device_train.py --out "$OUT/device_train.json" $(smoke_flag)
stage eval 90 "$PYTHON" benchmarks/device_eval.py --out "$OUT/device_eval.json" $(smoke_flag)
stage quickstart 150 "$PYTHON" benchmarks/device_quickstart.py --root "$WORK/runs" --out "$OUT/device_quickstart.json" \
  $(smoke_flag)
stage bench_train 120 bash -c bench_train

"$PYTHON" - "$OUT/device_check.json" "$SMOKE" "$(($(date +%s) - START))" "${STAGES[@]}" <<'EOF'
import json, os, sys
stages = {}
for item in sys.argv[4:]:
    name, rc, seconds = item.split()
    stages[name] = {"returncode": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                    "seconds": int(seconds)}
json.dump({"benchmark": "device_check", "device": os.environ["DEVICE"], "smoke": sys.argv[2] == "1",
           "seconds": int(sys.argv[3]), "stages": stages}, open(sys.argv[1], "w"), indent=2)
EOF
for item in "${STAGES[@]}"; do
  set -- $item
  [ "$2" = 0 ] || exit 1
done
