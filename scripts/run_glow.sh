#!/usr/bin/env bash
# Glow on Fashion-MNIST and its background model, then the likelihood, input complexity and background
# ratio scores. Re-running resumes. Extra arguments go to every program.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/glow_fashion_mnist.py
RUNS="${RUNS:-runs}"
.venv/bin/python train.py --config "$CONFIG" --workdir "$RUNS/glow_fashion_mnist" "$@"
.venv/bin/python train.py --config "$CONFIG:background" --workdir "$RUNS/glow_fashion_mnist_background" "$@"
.venv/bin/python evaluate.py --config "$CONFIG" --workdir "$RUNS/glow_fashion_mnist" \
    --config.eval.background_ratio.workdir="$RUNS/glow_fashion_mnist_background" "$@"
