#!/usr/bin/env bash
# OCSPruner, CIFAR-10 ResNet-56, 50 % MACs. Paper: 93.89 +- 0.11 top-1 (127.12M -> 63.12M MACs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch cifar10-resnet56-ocsp 128 \
    --model_name_or_path cifar_resnet56 --dataset_name uoft-cs/cifar10 \
    --pruning_method ocsp --target_flops_reduction 0.50 --layer_prune_limit 0.70 \
    --ocsp_reg_init 1e-4 --ocsp_reg_delta 1e-4 --ocsp_reg_interval 3 --ocsp_stability_threshold 0.999 \
    --ocsp_reg_start 32 --ocsp_prune_deadline 120 --optimizer_state_after_prune reset \
    --num_train_epochs 300 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9,nesterov=true \
    --weight_decay 5e-4 --lr_scheduler_type cosine "$@"
