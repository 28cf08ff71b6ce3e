#!/usr/bin/env bash
# The main job: train the default VAE on Fashion-MNIST (CPU, a few minutes), then score Fashion-MNIST
# test against MNIST, letters, noise, constant images and flips/inversions. Re-running resumes training
# (finished: nothing to do) and re-evaluates. Extra arguments go to both programs, e.g.
#   bash scripts/run_default.sh --config.train.steps=10000
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${WORKDIR:-runs/vae_fashion_mnist}"
.venv/bin/python train.py --config configs/vae_fashion_mnist.py --workdir "$WORKDIR" "$@"
.venv/bin/python evaluate.py --config configs/vae_fashion_mnist.py --workdir "$WORKDIR" "$@"
echo "Scores, metrics and plots are in $WORKDIR (plots/roc_log_likelihood.png, plots/hist_log_likelihood.png)."
