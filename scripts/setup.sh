#!/usr/bin/env bash
# One entry point for a fresh machine: create/reuse .venv, install hf_prune, then run a job.
#   bash scripts/setup.sh demo [script flags...]   # the embedded offline pruning job
#   bash scripts/setup.sh test [pytest flags...]   # the test suite
#   bash scripts/setup.sh install                  # only set up
# Idempotent: the install is skipped while pyproject.toml and the constraints are unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

job="${1:-install}"
shift || true
venv="${HF_PRUNE_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

# Without a GPU, pin the local CPU torch build: an unpinned torchvision would pull the newest
# torch plus ~4 GB of CUDA packages (see README, "Installing").
constraints=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
    constraints=(-c scripts/constraints-cpu.txt)
fi
stamp="$venv/.hf_prune-install"
want="$(cat pyproject.toml scripts/constraints-cpu.txt | sha256sum | cut -d' ' -f1) ${constraints[*]:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing hf_prune into $venv (about a minute) ..."
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "${constraints[@]}" \
        -e ".[test]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/python" scripts/fix_torchvision.py
    "$venv/bin/python" -c "import timm, torch_pruning, transformers, hf_prune" \
        || { echo "[setup] install failed: see the pip output above" >&2; exit 1; }
    echo "$want" > "$stamp"
fi

case "$job" in
    install) echo "[setup] ready: $venv" ;;
    demo) exec "$venv/bin/python" scripts/prune_image_classification.py "$@" ;;
    test) exec "$venv/bin/python" -m pytest "$@" ;;
    *) echo "unknown job '$job': use demo, test or install" >&2; exit 2 ;;
esac
