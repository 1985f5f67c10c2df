#!/usr/bin/env bash
# The GPU checks of pyrovae in one go, for a machine with CUDA and torch but no registry:
#   1. install pyro-ppl, arviz and the rest from wheels carried in .gpu-wheels/, then pyrovae without deps;
#   2. run the tests marked gpu (they skip without CUDA);
#   3. the GPU benchmarks: IS-5000 on all 10,000 binarized-MNIST test images, and a training epoch
#      of the 784-400-50 VAE at batch 100, each against its baseline on the same GPU.
# Prepare the wheels here (they are git-ignored), e.g.:
#   pip download --only-binary=:all: --dest .gpu-wheels pyro-ppl arviz h5netcdf xarray pandas scikit-learn tqdm
#   (and copy the binarized-MNIST files into .gpu-data/ if ../shared is not beside the checkout)
# then run it with the device tool, carrying .gpu-wheels and .gpu-data:  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data=${PYROVAE_GPU_DATA:-.gpu-data}
[ -d "$data" ] || data=../shared/data/binarized_mnist
python -m pip install -q --no-index --find-links .gpu-wheels pyro-ppl arviz h5netcdf xarray pandas scikit-learn tqdm pytest
python -m pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -m pytest -q -m gpu tests
python benchmarks/bench_eval.py --device cuda --images 100 --full --data-root "$data"
python benchmarks/bench_train.py --device cuda --epoch --data-root "$data"
