#!/usr/bin/env bash
# LAASP, ImageNet ResNet-50 from scratch, 42.3 % MACs. Paper: 76.48 -> 75.85 top-1 / 92.81 top-5.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch imagenet-resnet50-laasp 256 \
    --model_name_or_path resnet50 --dataset_name ILSVRC/imagenet-1k \
    --pruning_method laasp --target_flops_reduction 0.423 --layer_prune_limit 0.75 \
    --laasp_prune_start 25 --laasp_flops_step 0.01 --laasp_subset_size 5000 --laasp_screen_fraction 0 --laasp_race 0 \
    --laasp_recover_flops 0.03 --laasp_recovery_epochs 2 --optimizer_state_after_prune reset \
    --num_train_epochs 100 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9 \
    --weight_decay 1e-4 --lr_scheduler_type cosine "$@"
