#!/usr/bin/env bash
# Shared by the recipes: launch scripts/prune_image_classification.py on NUM_GPUS GPUs (default 1)
# with a global batch of GLOBAL_BATCH, bf16, an epoch-wise eval/save, and the recipe's flags.
# --round_to 1: the references' unrounded widths (hardware-aligned widths are not what the papers measured).
# Usage (from a recipe): launch <run name> <global batch> <flags...>; extra CLI flags are appended.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

launch() {
    local name="$1" global_batch="$2"
    shift 2
    local gpus="${NUM_GPUS:-1}"
    local config=scripts/accelerate_configs/single_gpu.yaml
    if [ "$gpus" -gt 1 ]; then
        config=scripts/accelerate_configs/multi_gpu.yaml
    fi
    accelerate launch --config_file "$config" --num_processes "$gpus" scripts/prune_image_classification.py \
        --output_dir "outputs/reproduce/$name" \
        --per_device_train_batch_size $((global_batch / gpus)) --per_device_eval_batch_size 256 \
        --bf16 --eval_strategy epoch --save_strategy epoch --save_total_limit 2 --logging_steps 50 \
        --dataloader_num_workers 8 --report_to tensorboard --eval_around_prune --round_to 1 \
        "$@"
}
