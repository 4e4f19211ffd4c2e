#!/usr/bin/env bash
# Runs every benchmark in this folder, one after another, printing each one's
# figures. Run by hand (`make bench`); nothing here is part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in benchmarks/*_bench.py; do
  echo "== $script"
  python "$script"
done
