#!/usr/bin/env bash
# LAASP, CIFAR-10 ResNet-110, 52.5 % MACs. Paper (mean of 3 seeds, best epoch): 94.41 -> 94.17.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch cifar10-resnet110-laasp 256 \
    --model_name_or_path cifar_resnet110 --dataset_name uoft-cs/cifar10 \
    --pruning_method laasp --target_flops_reduction 0.525 --layer_prune_limit 0.75 \
    --laasp_prune_start 60 --laasp_flops_step 0.005 --laasp_subset_size 10000 --laasp_screen_fraction 0 --laasp_race 0 \
    --laasp_recover_flops 0.005 --laasp_recovery_epochs 1 --optimizer_state_after_prune reset \
    --num_train_epochs 200 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9,nesterov=true \
    --weight_decay 5e-4 --lr_scheduler_type cosine "$@"
