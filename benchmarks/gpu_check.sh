#!/usr/bin/env bash
# The GPU checks of pyrovae in one go (issue 29), for a machine with CUDA and torch but no registry, in at most
# about 8 minutes:
#   1. pyro-ppl, arviz and the other packages that machine lacks, from wheels carried in .gpu-wheels/, into
#      .gpu-site/ (git-ignored); pyrovae itself from this checkout (PYTHONPATH);
#   2. the tests marked gpu (they skip without CUDA): CUDA-graph training steps, devices, evaluation;
#   3. the benchmarks, each against its baseline in the same process on the same GPU:
#      - a training step of the tiny VAE and an epoch of the 784-400-50 VAE, pyrovae captured (compile=auto:
#        a CUDA graph) and eager, against the hand-written step eager and as one CUDA graph;
#      - the 784-400-50 epoch again in TF32 and bf16 (pyrovae.precision);
#      - IS-5000 on all 10,000 binarized-MNIST test images (the gated vae-standard of the VampPrior table),
#        chunks recorded (FP32, TF32, bf16) and traced (FP32);
#      - AIS-200 with adapted step sizes against a fixed step (issue 27's cost, the MNIST VAE on the GPU);
#      - with the trained vae-standard run carried in .gpu-run/ (optional): IS-5000 on 1,000 random test
#        images at each precision (paired differences), and 5 epochs of its recipe at each (learning curves);
#   4. one table of the figures against the issue's targets.
# Each benchmark's JSON lands in $OUT (the device tool's) or in .gpu-out/.
#
# Prepare here, in the repository root, once (both folders are git-ignored):
#   mkdir -p .gpu-data && cp ../shared/data/binarized_mnist/*.amat.gz .gpu-data/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .gpu-wheels pyro-ppl==1.9.2 pyro-api arviz==0.23.4 xarray-einstats h5netcdf platformdirs
#   mkdir -p .gpu-run && cp RUNS/vae-standard/{config.json,checkpoint.pt} .gpu-run/   # optional, 18 MB
# then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels", ".gpu-data",
# ".gpu-run"], timeout_s=540). The machine's torch is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu-out}
mkdir -p "$out"
data=.gpu-data
[ -d "$data" ] || data=../shared/data/binarized_mnist
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu-site .gpu-wheels/*.whl
export PYTHONPATH="$PWD/.gpu-site:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, pyro, pyrovae; print('torch', torch.__version__, 'pyro', pyro.__version__, 'pyrovae', pyrovae.__version__)"
start=$SECONDS
python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/gpu-tests.log" | tail -5
echo "GPU tests: $((SECONDS - start)) s"
bench() {  # name, then the benchmark's arguments
  local name=$1; shift
  local t0=$SECONDS
  python3 "$@" --device cuda --json "$out/$name.json" 2>&1 | tee "$out/$name.log" | tail -4
  echo "$name: $((SECONDS - t0)) s"
}
bench train-tiny benchmarks/bench_train.py --model tiny --rounds 7 --steps 100
bench train-tiny-eager benchmarks/bench_train.py --model tiny --rounds 7 --steps 100 --compile off
bench train-mnist benchmarks/bench_train.py --model mnist --rounds 5 --epoch --data-root "$data"
bench train-mnist-eager benchmarks/bench_train.py --model mnist --rounds 5 --epoch --compile off --data-root "$data"
bench eval benchmarks/bench_eval.py --model gated --images 100 --full --data-root "$data"
bench eval-tf32 benchmarks/bench_eval.py --model gated --images 100 --full --precision tf32 --data-root "$data"
bench train-mnist-tf32 benchmarks/bench_train.py --model mnist --rounds 3 --epoch --precision tf32 --data-root "$data"
bench train-mnist-bf16 benchmarks/bench_train.py --model mnist --rounds 3 --epoch --precision bf16 --data-root "$data"
bench eval-bf16 benchmarks/bench_eval.py --model gated --images 100 --full --precision bf16 --data-root "$data"
bench eval-traced benchmarks/bench_eval.py --model gated --images 100 --full --compile off --data-root "$data"
bench ais benchmarks/bench_ais.py --steps 200 --rounds 2 --data-root "$data"
if [ -f .gpu-run/checkpoint.pt ]; then
  bench precision-eval benchmarks/bench_precision.py evaluate --run-dir .gpu-run --images 1000 --data-root "$data"
  bench precision-train benchmarks/bench_precision.py train --run-dir .gpu-run --epochs 5 --out "$out" --data-root "$data"
fi
python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def fig(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
rows = []
for name in ("train-tiny", "train-tiny-eager"):
    f = fig(name)
    if f:
        rows.append((f"{name}: step, pyrovae / hand eager", f"{f['ratio_hand']:.3f}", "<= 1.4 (CPU target)"))
        rows.append((f"{name}: step, pyrovae / hand CUDA graph", f"{f['ratio_hand_captured']:.3f}", ""))
for name in ("train-mnist", "train-mnist-eager", "train-mnist-tf32", "train-mnist-bf16"):
    f = fig(name)
    if "epoch_s" in f:
        ours = [k for k in f["epoch_s"] if k.startswith("pyrovae")][0]
        rows.append((f"{name}: epoch of 500 steps, s", f"{f['epoch_s'][ours]:.3f}", "<= 0.5"))
        rows.append((f"{name}: epoch, pyrovae / hand CUDA graph", f"{f['epoch_ratio_hand_captured']:.3f}", "<= 1.3"))
for name in ("eval", "eval-tf32", "eval-bf16", "eval-traced"):
    f = fig(name)
    if "full_wall_s" in f:
        target = {"highest": "<= 6", "tf32": "<= 4"}.get(f["precision"], "")
        rows.append((f"{name}: IS-5000, 10,000 images, s (gated vae-standard)", f"{f['full_wall_s']:.2f}", target))
    if f:
        rows.append((f"{name}: IS-5000, pyrovae / hand images per s", f"{f['ratio_hand']:.3f}", ""))
for model, ratio in fig("ais").get("ratios", {}).items():
    rows.append((f"ais: AIS-200 time, adapted / fixed step, {model}", f"{ratio:.3f}", "<= 1.05 (issue 27)"))
for precision, row in list(fig("precision-eval").get("rows", {}).items())[1:]:
    rows.append((f"precision-eval: IS-5000 {precision} - highest, nats", f"{row['difference']:+.4f}", f"se {row['difference_se']:.4f}"))
for label, row in list(fig("precision-train").get("rows", {}).items())[1:]:
    epochs = len(row["valid_loss"])
    rows.append((f"precision-train: valid -ELBO after {epochs} epochs, {label} - highest", f"{row['valid_difference'][-1]:+.3f}", ""))
width = max(len(r[0]) for r in rows) if rows else 10
print(f"\n{'figure':<{width}}  {'value':>8}  target")
for row in rows:
    print(f"{row[0]:<{width}}  {row[1]:>8}  {row[2]}")
EOF
echo "gpu_check: $SECONDS s in all"
