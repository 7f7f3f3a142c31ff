#!/usr/bin/env bash
# OCSPruner, CIFAR-10 VGG-16, 60 % MACs removed. Paper: 93.98 top-1 with 39.98 % of the FLOPs left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch cifar10-vgg16-ocsp 128 \
    --model_name_or_path cifar_vgg16 --dataset_name uoft-cs/cifar10 \
    --pruning_method ocsp --target_flops_reduction 0.60 --layer_prune_limit 0.70 \
    --ocsp_reg_start 32 --ocsp_prune_deadline 120 --optimizer_state_after_prune reset \
    --num_train_epochs 300 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9,nesterov=true \
    --weight_decay 5e-4 --lr_scheduler_type cosine "$@"
