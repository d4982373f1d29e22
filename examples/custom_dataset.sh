#!/usr/bin/env bash
# Train on your own videos laid out UCF101-style, one folder per class, split into train and val:
#
#   DATA/train/<class>/<video>.mp4     DATA/val/<class>/<video>.mp4
#
# (both splits must have the same class folders: labels are the sorted folder names).
# Usage: examples/custom_dataset.sh DATA WORK [extra tsnctl train/test options, e.g. -o train.epochs=5]
set -euo pipefail
DATA=$1
WORK=$2
shift 2

# 1. Frames: WORK/frames/<split>/<class>/<video>.mp4/img_00001.jpg ..., a frame list and labels.txt per split.
for split in train val; do
    tsnctl extract-frames "$DATA/$split" "$WORK/frames/$split" --short-side 256
done
NUM_CLASSES=$(wc -l < "$WORK/frames/train/labels.txt")

# 2. A config that lists only what differs from the reference recipe (see docs/config.md).
mkdir -p "$WORK"
cat > "$WORK/config.yaml" <<YAML
data:
  train_list: $WORK/frames/train/frame_list.txt
  val_list: $WORK/frames/val/frame_list.txt
  test_list: $WORK/frames/val/frame_list.txt
  label_file: $WORK/frames/train/labels.txt
model:
  num_classes: $NUM_CLASSES
  pretrained: imagenet   # torchvision's ResNet-50 weights; use "" to train from scratch
train:
  epochs: 30
  lr_steps: [15, 25]
  lr: 0.001              # for a batch of 32 on one GPU, fine-tuning from ImageNet
YAML

# 3. Train with validation, then test the best checkpoint (report in WORK/run/test_frame_list/).
tsnctl train -c "$WORK/config.yaml" --output "$WORK/run" --validate "$@"
tsnctl test -c "$WORK/config.yaml" -w "$WORK/run/best.pt" "$@"
