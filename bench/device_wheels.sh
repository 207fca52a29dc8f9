#!/usr/bin/env bash
# Gather the wheels the Kolors benchmark needs on a lent GPU machine that cannot reach an index.
#
# That machine's image has Python 3.12 with torch, numpy, safetensors, sentencepiece, timm,
# pyyaml, tqdm, pillow, regex, requests and jinja2, but not diffusers, open_clip or pydantic, and
# its transformers 5 / huggingface-hub 1.x are outside the harness's pins (transformers<5,
# huggingface-hub<1.0; see /work/.library/device/KINDS.md). This script downloads, for CPython 3.12 on x86-64 Linux,
# the harness's pinned versions of what is missing or too new into .whl/ (git-ignored).
#
#   bash bench/device_wheels.sh            # once, in the repository root, where pip works
#
# Then each device call carries .whl and starts with (one line):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
# and runs, e.g.:
#   PYTHONUNBUFFERED=1 python3 bench/kolors_bench.py --device cuda --out $OUT/kolors.json 2>&1 | tee $OUT/log
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
mkdir -p "$dest"

pin() {  # the version .ci/constraints.txt pins, else the one given
  local v
  v=$(grep -i "^$1==" .ci/constraints.txt | head -1 | cut -d= -f3)
  echo "$1==${v:-$2}"
}

wheels=(
  "$(pin diffusers 0.38.0)"
  "$(pin transformers 4.57.6)"
  "$(pin huggingface-hub 0.36.2)"
  "$(pin peft 0.21.2)"
  "$(pin open-clip-torch 3.3.0)"
  "$(pin simple-aesthetics-predictor 0.1.2)"
  "$(pin diffsynth 1.1.9)"  # ships the real Kolors tokenizer files (12 MB; never imported)
  tokenizers==0.22.2
  importlib-metadata==10.2.0
  ftfy==6.3.1
  wcwidth==0.9.4
  pydantic==2.14.3
  pydantic-core==2.50.4
  annotated-types==0.8.0
  typing-inspection==0.4.5
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" "${wheels[@]}"
ls -1 "$dest"
du -sh "$dest"
