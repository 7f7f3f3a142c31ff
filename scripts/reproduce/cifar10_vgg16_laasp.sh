#!/usr/bin/env bash
# LAASP, CIFAR-10 VGG-16, 60.5 % MACs. Paper (mean of 3 seeds, best epoch): 93.79 -> 93.79.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch cifar10-vgg16-laasp 256 \
    --model_name_or_path cifar_vgg16 --dataset_name uoft-cs/cifar10 \
    --pruning_method laasp --target_flops_reduction 0.605 --layer_prune_limit 0.75 \
    --laasp_prune_start 30 --laasp_flops_step 0.01 --laasp_subset_size 10000 --laasp_screen_fraction 0 --laasp_race 0 \
    --laasp_recover_flops 0.03 --laasp_recovery_epochs 3 --optimizer_state_after_prune reset \
    --num_train_epochs 160 --learning_rate 0.1 --optim sgd --optim_args momentum=0.9,nesterov=true \
    --weight_decay 5e-4 --lr_scheduler_type cosine "$@"
