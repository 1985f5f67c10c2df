"""Throughput of data-parallel training and sharded evaluation, for 1 and 2 (or more) processes.

Trains the 784-400-50 softplus MLP VAE (Bernoulli likelihood, Trace_ELBO, Adam 1e-3) on
statically binarized MNIST with a global batch of ``--batch-size`` images, and estimates
``log p(x)`` of ``--eval-images`` test images with ``--num-samples`` importance samples
(:func:`pyrovae.log_likelihood`). The 1-process figures come from a plain process, the others
from ``torchrun --standalone --nproc_per_node N`` workers (Gloo on CPU, NCCL with ``--device
cuda``), launched by this script; every process runs on ``--threads`` threads (default 1, as
OMP_NUM_THREADS=1). Prints a table of steps/s and images/s, and the speed-up over one process.

On a machine shared with other jobs the wall-clock speed-up is bounded by the CPU share the
scheduler gives this job (with Linux's autogroup scheduling, one share per session however many
processes it runs). The table also gives the CPU time the processes spend on the same work, all
ranks together: its ratio to one process's, times W, is the speed-up to expect with a free core
per process (``cpu x``), an upper bound that leaves out waiting for a slower rank.

    python benchmarks/bench_distributed.py [--procs 1,2] [--device cpu|cuda] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae import distributed

ROOT = Path(__file__).resolve().parents[1]


def _arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "binarized_mnist"))
    parser.add_argument("--procs", default="1,2", help="process counts to compare, e.g. 1,2,4")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-size", type=int, default=100, help="global minibatch of training")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps (after 10 warm-up)")
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # where a worker reports
    return parser.parse_args(argv)


def _timed(fn) -> tuple[float, float]:
    """Wall seconds ``fn`` takes on the slowest rank (every rank starts together and waits for
    all), and the CPU seconds it takes on all ranks together."""
    distributed.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    cpu = time.process_time() - cpu
    distributed.barrier()
    wall = time.perf_counter() - start
    return wall, distributed.world_size() * distributed.all_reduce_mean(torch.tensor(cpu))


def worker(args: argparse.Namespace) -> None:
    """Measure in this process (one rank of a launch, or the only process)."""
    torch.set_num_threads(args.threads)
    distributed.init("nccl" if args.device == "cuda" else "gloo")
    device = distributed.device() if args.device == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    train = pyrovae.load("binarized-mnist", "train", root=args.data_root)
    test = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    vae = pyrovae.VAE(event_shape=(1, 28, 28), latent_dim=50, hidden=(400,)).to(device)
    trainer = pyrovae.Trainer(vae, len(train))
    steps = args.steps + 10
    lo, hi = distributed.shard(args.batch_size)
    batches = [
        train.batch(torch.arange(i, i + args.batch_size) % len(train))[lo:hi].to(device)
        for i in range(0, steps * args.batch_size, args.batch_size)
    ]

    def run(part):
        for x in part:
            trainer.step(x, batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(batches[:10])  # warm-up
    train_s, train_cpu = _timed(lambda: run(batches[10:]))
    images = test.batch(torch.arange(args.eval_images)).to(device)

    def evaluate(part):
        pyrovae.log_likelihood(vae.model, vae.guide, part, args.num_samples, seed=0, progress=False)

    # warm-up: each process's first chunks pay for fresh memory (page faults) and kernel choices
    evaluate(images[: max(1, len(images) // 4)])
    eval_s, eval_cpu = _timed(lambda: evaluate(images))
    if distributed.is_main():
        report = {
            "procs": distributed.world_size(),
            "steps_per_s": args.steps / train_s,
            "train_images_per_s": args.steps * args.batch_size / train_s,
            "eval_images_per_s": args.eval_images / eval_s,
            "train_cpu_s": train_cpu,
            "eval_cpu_s": eval_cpu,
        }
        Path(args.worker).write_text(json.dumps(report))


def launch(args: argparse.Namespace, procs: int, report: Path) -> dict:
    """Run :func:`worker` in ``procs`` processes and return rank 0's report."""
    passed = [
        *("--data-root", args.data_root, "--device", args.device, "--threads", str(args.threads)),
        *("--batch-size", str(args.batch_size), "--steps", str(args.steps)),
        *("--eval-images", str(args.eval_images), "--num-samples", str(args.num_samples)),
        *("--worker", str(report)),
    ]
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    subprocess.run([*launcher, __file__, *passed], check=True, env=env, stdin=subprocess.DEVNULL)
    return json.loads(report.read_text())


def main() -> None:
    args = _arguments()
    if args.worker:
        worker(args)
        return
    procs = [int(p) for p in args.procs.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [launch(args, n, Path(tmp) / f"report-{n}.json") for n in procs]
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = rows[0]
    print(
        f"\n{args.device}, {args.threads} thread(s) per process; training: global batch {args.batch_size}, "
        f"{args.steps} steps; evaluation: {args.eval_images} images, K = {args.num_samples}"
    )
    columns = ("", "procs", "steps/s", "img/s", "x", "CPU s", "cpu x")
    print("  ".join(f"{c:>{w}}" for c, w in zip(columns, (5, 5, 8, 8, 5, 7, 5), strict=True)))
    for task in ("train", "eval"):
        rate, cpu = f"{task}_images_per_s", f"{task}_cpu_s"
        for row in rows:
            steps = f"{row['steps_per_s']:8.1f}" if task == "train" else f"{'':>8}"
            print(
                f"{task:>5}  {row['procs']:>5}  {steps}  {row[rate]:8.1f}  {row[rate] / base[rate]:5.2f}  "
                f"{row[cpu]:7.2f}  {row['procs'] * base[cpu] / row[cpu]:5.2f}"
            )


if __name__ == "__main__":
    main()
