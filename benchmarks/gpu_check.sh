#!/usr/bin/env bash
# The device check of benchmarks/GPU_PLAN.md: one call of at most 10 minutes on one H200, run from
# the repository root through the device tool with `.whl` carried (ml-collections, which the image
# lacks). Results go to $OUT (at most 8 files). Everything runs under deadlines counted from the
# start, so what finished comes back even when a part overruns:
#   science (until $SCIENCE_S): groups of sweeps of the gpu suite, one process each, side by side on
#     the GPU (default: the Guo-scale positive control and its prior twin, and the rest in $SUITE's
#     order);
#   benchmarks (until $TOTAL_S): effective-rank methods, the in-step metrics' share of a chunk, and
#     training MFU at the paper shape with 128 runs.
# The wheel, made here first (.whl is git-ignored): pip download --no-deps --only-binary=:all:
#   --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
# On CPU (a rehearsal): PRESET=tiny GUO= SCIENCE_S=120 TOTAL_S=200 BENCH_SCALE=tiny bash ...
# MPS=1 runs the sweep processes under a CUDA MPS daemon started for this call (their kernels then
# share the GPU instead of time-slicing it; the daemon is quit on exit); when no daemon starts, or a
# JAX client cannot reach the GPU through it, the call goes on without it and env.txt says so.
set -uo pipefail
OUT=${OUT:-/tmp/out}
PRESET=${PRESET:-gpu}
SCIENCE_S=${SCIENCE_S:-330}
TOTAL_S=${TOTAL_S:-500}
BENCH_SCALE=${BENCH_SCALE:-full}
GUO=${GUO-attention-guo-brake0,attention-guo-prior-brake0}
SUITE=${SUITE:-attention,attention-prior-brake0,attention-recall,attention-recall-prior-brake0,depth,depth-prior-brake0,graph,graph-prior-brake0,attention-cosine-brake0,attention-sigmoid-brake0,attention-distance-brake0,graph-distance-brake0,depth-recall,depth-recall-prior-brake0,ssm,ssm-prior-brake0,ssm-frozen-brake0,ssm-noescape-brake0,ssm-recall,ssm-recall-prior-brake0,rwkv,rwkv-prior-brake0,rwkv-noescape-brake0,rwkv-recall,rwkv-recall-prior-brake0}
PY=$(command -v python3 || command -v python)
START=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - START) )); }
mkdir -p "$OUT" runs
mps_quit() { echo quit | nvidia-cuda-mps-control 2>/dev/null; }
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d 2>/dev/null && timeout 60 "$PY" \
      -c "import jax; assert jax.default_backend() == 'gpu'; jax.numpy.ones(8).block_until_ready()"
  then MPS_STATE="MPS: on"; trap mps_quit EXIT
  else MPS_STATE="MPS: requested, not available (ran without)"; mps_quit
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
else MPS_STATE="MPS: off"
fi
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
WORKDIR=runs/report_$PRESET
quiet() {  # keeps the engine's and the report's INFO lines, drops the libraries' (per-save spam)
  awk '!/^I[0-9][0-9][0-9][0-9] / || /(progress|report)\.py:/ {print; fflush()}'
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import jax, flax, optax, orbax.checkpoint, sys; print(sys.version.split()[0], 'jax',
jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  nproc; echo "$MPS_STATE"; } > "$OUT/env.txt" 2>&1

# science: one process per group of sweeps ($SWEEP_GROUPS, ";" between groups;
# default: the Guo control, then the rest of the suite), side by side on the GPU,
# each allowed an equal share of its memory
SWEEP_GROUPS=${SWEEP_GROUPS:-${GUO:+$GUO;}$SUITE}
IFS=';' read -ra group_list <<< "$SWEEP_GROUPS"
export XLA_PYTHON_CLIENT_MEM_FRACTION=$("$PY" -c "print(round(0.9 / ${#group_list[@]}, 3))")
pids=()
for i in "${!group_list[@]}"; do
  timeout -k 10 -s INT "$(left "$SCIENCE_S")" "$PY" experiments/report.py --preset="$PRESET" \
    --workdir="$WORKDIR" --only="${group_list[$i]}" --compile_workers=2 2>&1 \
    | quiet > "/tmp/science_$i.log" &
  pids+=($!)
done
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 \
  > "$OUT/gpu_util.csv" 2>/dev/null &
SAMPLER=$!
wait "${pids[@]}"
kill "$SAMPLER" 2>/dev/null
for i in "${!group_list[@]}"; do
  echo "=== process $i: ${group_list[$i]}"; cat "/tmp/science_$i.log"
done > "$OUT/science.log"
# every finished sweep's tables and phase diagram (no checkpoints, no other figures); the per-step
# metrics of the positive control only (the suite's would pass the 16 MiB a file)
(cd "$WORKDIR" && find . -type f ! -path '*/checkpoints/*' \
   \( ! -path '*/figures/*' -o -name phase_diagram.png \) \( ! -name metrics.csv -o -path '*guo*' \) \
   | tar czf "$OUT/science.tgz" -T -) 2>> "$OUT/science.log"
unset XLA_PYTHON_CLIENT_MEM_FRACTION

# benchmarks, alone on the GPU; one JSON line per measurement in bench.jsonl
if [ "$(left "$TOTAL_S")" -gt 30 ]; then
  "$PY" -m benchmarks.svd_methods $([ "$BENCH_SCALE" = tiny ] && echo --batch=16 --repeats=2) \
    > "$OUT/svd_methods.md" 2>&1
  bench() {  # bench TIMEOUT ARGS...: one benchmarks.workers measurement, if the deadline allows
    local budget; budget=$(( $(left "$TOTAL_S") < $1 ? $(left "$TOTAL_S") : $1 )); shift
    [ "$budget" -gt 10 ] || { echo "{\"skipped\": \"$*\"}" >> "$OUT/bench.jsonl"; return; }
    timeout -k 10 -s INT "$budget" "$PY" -m benchmarks.workers "$@" 2>> "$OUT/bench.log" \
      | grep '^RESULT' | sed 's/^RESULT //' >> "$OUT/bench.jsonl" \
      || echo "{\"failed_or_timed_out\": \"$*\"}" >> "$OUT/bench.jsonl"
  }
  if [ "$BENCH_SCALE" = tiny ]; then
    bench 60 --impl=overhead --shape=cpu --runs=4 --steps=100 --chunk_steps=100 --repeats=1
    bench 60 --impl=engine --shape=cpu --runs=4 --steps=100 --chunk_steps=50
  else
    bench 60 --impl=overhead --shape=w64 --runs=64 --steps=200 --chunk_steps=200 --repeats=2 \
      --svd_method=jacobi
    bench 100 --impl=engine --shape=paper --runs=128 --steps=200 --chunk_steps=100
    bench 50 --impl=overhead --shape=cpu --runs=64 --steps=200 --chunk_steps=200 --repeats=2
    bench 60 --impl=overhead --shape=paper --runs=16 --steps=100 --chunk_steps=100 --repeats=1 \
      --svd_method=jacobi
  fi
  tail -c 20000 "$OUT/bench.log" > "$OUT/bench_tail.log" 2>/dev/null; rm -f "$OUT/bench.log"
fi
echo "done in $(( $(date +%s) - START )) s" >> "$OUT/env.txt"
