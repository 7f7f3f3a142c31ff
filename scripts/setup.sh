#!/usr/bin/env bash
# One entry point for a fresh machine: create/reuse .venv, install hf_prune, then run a job.
#   bash scripts/setup.sh demo [script flags...]   # the embedded offline pruning job
#   bash scripts/setup.sh test [pytest flags...]   # the test suite
#   bash scripts/setup.sh install                  # only set up
#   bash scripts/setup.sh plan                     # print which torch and the pip command; install nothing
# Idempotent: the install is skipped while pyproject.toml, the constraints and the torch choice are unchanged.
#
# Which torch (printed as "[setup] torch: ..."):
#   - a GPU (nvidia-smi): the default torch of the package index (CUDA builds);
#   - no GPU, the pinned CPU wheel (scripts/constraints-cpu.txt) in $HF_PRUNE_WHEELS
#     (default: pip's find-links, else /opt/wheels): that wheel;
#   - no GPU, no such wheel: the pinned CPU build from $HF_PRUNE_TORCH_INDEX
#     (default https://download.pytorch.org/whl/cpu); set HF_PRUNE_TORCH_INDEX= (empty) for the
#     default torch of the package index instead (a CUDA build: several GB more).
# HF_PRUNE_DEVICE=cpu|gpu overrides the GPU detection.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

job="${1:-install}"
shift || true
venv="${HF_PRUNE_VENV:-.venv}"
python="${PYTHON:-python3}"
constraints_file=scripts/constraints-cpu.txt
wheels="${HF_PRUNE_WHEELS:-${PIP_FIND_LINKS:-/opt/wheels}}"
torch_index="${HF_PRUNE_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
device="${HF_PRUNE_DEVICE:-$(command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)}"

# The pip options that choose torch, and a sentence saying which.
torch_pin="$(sed -n 's/^torch==//p' "$constraints_file")"
pip_torch=()
if [ "$device" = gpu ]; then
    torch_choice="default torch of the package index (GPU machine)"
elif compgen -G "$wheels/torch-${torch_pin}-*.whl" >/dev/null; then
    pip_torch=(-c "$constraints_file" --find-links "$wheels")
    torch_choice="local CPU wheel torch ${torch_pin} from $wheels"
elif [ -n "$torch_index" ]; then
    pip_torch=(-c "$constraints_file" --extra-index-url "$torch_index")
    torch_choice="CPU build torch ${torch_pin} from $torch_index (no torch-${torch_pin} wheel in $wheels)"
else
    torch_choice="default torch of the package index (no torch-${torch_pin} wheel in $wheels, HF_PRUNE_TORCH_INDEX empty)"
fi
pip_command=("$venv/bin/python" -m pip install --disable-pip-version-check -q "${pip_torch[@]}" -e ".[test]")
echo "[setup] torch: $torch_choice"
if [ "$job" = plan ]; then
    echo "[setup] pip command: ${pip_command[*]}"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.hf_prune-install"
want="$(cat pyproject.toml "$constraints_file" | sha256sum | cut -d' ' -f1) ${pip_torch[*]:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing hf_prune into $venv (about a minute) ..."
    "${pip_command[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/python" scripts/fix_torchvision.py
    "$venv/bin/python" -c "import timm, torch_pruning, transformers, hf_prune" \
        || { echo "[setup] install failed: see the pip output above" >&2; exit 1; }
    echo "$want" > "$stamp"
fi

case "$job" in
    install) echo "[setup] ready: $venv" ;;
    demo) exec "$venv/bin/python" scripts/prune_image_classification.py "$@" ;;
    test) exec "$venv/bin/python" -m pytest "$@" ;;
    *) echo "unknown job '$job': use demo, test, install or plan" >&2; exit 2 ;;
esac
