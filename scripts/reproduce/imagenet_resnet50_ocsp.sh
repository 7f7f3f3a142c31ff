#!/usr/bin/env bash
# OCSPruner, ImageNet ResNet-50 from scratch, 48 % MACs removed. Paper: 75.95 top-1 with 51.74 % of
# the FLOPs left (1.30x training speed-up). Schedule of the paper's ImageNet (ResNet-18) table.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch imagenet-resnet50-ocsp 256 \
    --model_name_or_path resnet50 --dataset_name ILSVRC/imagenet-1k \
    --pruning_method ocsp --target_flops_reduction 0.48 --layer_prune_limit 0.75 \
    --ocsp_reg_interval 2 --ocsp_prune_deadline 50 --ocsp_plateau_tolerance 1e-4 --optimizer_state_after_prune reset \
    --num_train_epochs 130 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9 \
    --weight_decay 1e-4 --lr_scheduler_type cosine "$@"
