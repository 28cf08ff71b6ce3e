#!/usr/bin/env bash
# PixelCNN++ on Fashion-MNIST with both reference models, then every likelihood-ratio score:
# trains the full model, its background model (perturbed inputs) and a local PixelCNN, then evaluates
# the full model (likelihood, input complexity, background ratio, full-vs-local ratio). Re-running resumes.
# Extra arguments go to every program, e.g. bash scripts/run_pixelcnn.sh --config.train.steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/pixelcnn_fashion_mnist.py
RUNS="${RUNS:-runs}"
.venv/bin/python train.py --config "$CONFIG" --workdir "$RUNS/pixelcnn_fashion_mnist" "$@"
.venv/bin/python train.py --config "$CONFIG:background" --workdir "$RUNS/pixelcnn_fashion_mnist_background" "$@"
.venv/bin/python train.py --config "$CONFIG:local" --workdir "$RUNS/pixelcnn_fashion_mnist_local" "$@"
.venv/bin/python evaluate.py --config "$CONFIG" --workdir "$RUNS/pixelcnn_fashion_mnist" \
    --config.eval.background_ratio.workdir="$RUNS/pixelcnn_fashion_mnist_background" \
    --config.eval.local_ratio.workdir="$RUNS/pixelcnn_fashion_mnist_local" "$@"
