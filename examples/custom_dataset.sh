#!/usr/bin/env bash
# Train on your own videos, one folder per class, in either layout:
#
#   DATA/<class>/<video>.mp4                               one tree: 'tsnctl split' makes a stratified 80/20
#                                                          train/val split (set GROUP_BY to keep clips of one
#                                                          source video together, e.g. GROUP_BY='_(g\d+)_')
#   DATA/train/<class>/<video>.mp4  DATA/val/<class>/...   already split (both with the same class folders)
#
# Labels are the sorted class folder names.
# Usage: examples/custom_dataset.sh DATA WORK [extra tsnctl train/test options, e.g. -o train.epochs=5]
set -euo pipefail
DATA=$1
WORK=$2
shift 2

# 1. Frames: WORK/frames/.../<class>/<video>.mp4/img_00001.jpg ..., a frame list per split and labels.txt.
if [ -d "$DATA/train" ] && [ -d "$DATA/val" ]; then
    for split in train val; do
        tsnctl extract-frames "$DATA/$split" "$WORK/frames/$split" --short-side 256
    done
    TRAIN_LIST=$WORK/frames/train/frame_list.txt VAL_LIST=$WORK/frames/val/frame_list.txt
    LABELS=$WORK/frames/train/labels.txt
else
    # WORK/lists/{train,val}_videos.txt ('<path> <label>', paths relative to WORK/lists) and labels.txt
    tsnctl split "$DATA" --val 0.2 -o "$WORK/lists" --overwrite ${GROUP_BY:+--group-by "$GROUP_BY"}
    for split in train val; do
        tsnctl extract-frames "$WORK/lists/${split}_videos.txt" "$WORK/frames" --short-side 256
    done
    TRAIN_LIST=$WORK/frames/train_videos_frames.txt VAL_LIST=$WORK/frames/val_videos_frames.txt
    LABELS=$WORK/lists/labels.txt
fi
NUM_CLASSES=$(wc -l < "$LABELS")

# 2. A config that lists only what differs from the reference recipe (see docs/config.md).
mkdir -p "$WORK"
cat > "$WORK/config.yaml" <<YAML
data:
  train_list: $TRAIN_LIST
  val_list: $VAL_LIST
  test_list: $VAL_LIST
  label_file: $LABELS
model:
  num_classes: $NUM_CLASSES
  pretrained: imagenet   # torchvision's ResNet-50 weights; use "" to train from scratch
train:
  epochs: 30
  lr_steps: [15, 25]
  lr: 0.001              # for a batch of 32 on one GPU, fine-tuning from ImageNet
YAML

# 3. Train with validation, then test the best checkpoint (report in WORK/run/test_<val list name>/).
tsnctl train -c "$WORK/config.yaml" --output "$WORK/run" --validate "$@"
tsnctl test -c "$WORK/config.yaml" -w "$WORK/run/best.pt" "$@"
