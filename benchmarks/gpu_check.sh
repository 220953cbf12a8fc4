#!/usr/bin/env bash
# The device check of benchmarks/GPU_PLAN.md, for one H200 (run from the repository root through the
# device tool; results go to $OUT). Part "metrics" then part "suite1" in the first call, "suite2" in
# the second:  bash benchmarks/gpu_check.sh metrics suite1   /   bash benchmarks/gpu_check.sh suite2
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" runs
pip install -q -e . >/dev/null
PART1=attention-guo-brake0,attention-guo-prior-brake0,attention,attention-recall,graph,depth,depth-recall,attention-prior-brake0,attention-recall-prior-brake0,graph-prior-brake0,depth-prior-brake0,depth-recall-prior-brake0,attention-cosine-brake0,attention-sigmoid-brake0,attention-distance-brake0,graph-distance-brake0
PART2=ssm,ssm-recall,rwkv,rwkv-recall,ssm-prior-brake0,ssm-recall-prior-brake0,rwkv-prior-brake0,rwkv-recall-prior-brake0,ssm-frozen-brake0,ssm-noescape-brake0,rwkv-noescape-brake0
for part in "$@"; do
  case "$part" in
    metrics)
      python - <<'PY' | tee "$OUT/svd_methods.txt"
import subprocess, sys
code = r'''
import time, sys, numpy as np, jax, jax.numpy as jnp
from rc_jax import metrics
method = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 64, 64)).astype(np.float32)
x[:128] = (rng.normal(size=(128, 64, 1)) * rng.normal(size=(128, 1, 64)) + 1e-3 * x[:128])
f = jax.jit(lambda a: metrics.effective_rank(a, reduce=False, method=method))
got = np.asarray(f(x)); jax.block_until_ready(f(x))
t0 = time.perf_counter(); [jax.block_until_ready(f(x)) for _ in range(10)]; ms = (time.perf_counter() - t0) * 100
s = np.linalg.svd(x.astype(np.float64), compute_uv=False); p = s / s.sum(-1, keepdims=True)
ref = np.exp(-(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(-1))
print(f"{method:7s} {ms:8.2f} ms per [512,64,64]   max rel err vs float64 {np.max(np.abs(got - ref) / ref):.2e}")
'''
for method in ("svd", "jacobi", "gram64"):
  env = {"JAX_ENABLE_X64": "1"} if method == "gram64" else {}
  import os
  subprocess.run([sys.executable, "-c", code, method], env=dict(os.environ, **env), check=False)
PY
      for shape in cpu w64 paper; do for method in svd jacobi; do
        python -m benchmarks.workers --impl=overhead --shape=$shape --runs=64 --steps=200 \
          --chunk_steps=200 --repeats=2 --svd_method=$method > "$OUT/overhead_${shape}_${method}.json" || true
      done; done
      python -m benchmarks.workers --impl=engine --shape=paper --runs=128 --steps=400 \
        --chunk_steps=200 --svd_method=jacobi > "$OUT/engine_paper_128.json" || true
      ;;
    suite1|suite2)
      only=$([ "$part" = suite1 ] && echo "$PART1" || echo "$PART2")
      python experiments/report.py --preset=gpu --workdir=runs/report_gpu --only="$only" \
        --compile_workers=16 --svd_method=jacobi 2>&1 | tail -40 \
        > "$OUT/${part}.log" || true
      tar czf "$OUT/${part}_values.tgz" runs/report_gpu/*/report_values.json \
        runs/report_gpu/*/figures/phase_diagram.png 2>/dev/null || true
      ;;
  esac
done
nvidia-smi --query-gpu=name,memory.used --format=csv > "$OUT/gpu.txt" || true
python -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT/gpu.txt"
