#!/usr/bin/env bash
# The demo flow, step by step: render a synthetic 6-class dataset, extract frames, train a ResNet-18 TSN
# on CPU, test it (report with per-class accuracy and a confusion matrix), export to ONNX, predict a clip
# and a stream. Run from the project root after `pip install -e .`; takes minutes on a laptop CPU.
set -euo pipefail
OUT=${1:-demo}

tsnctl demo-data "$OUT/data" --train-per-class 60 --val-per-class 10
tsnctl extract-frames "$OUT/data/train_videos.txt" "$OUT/frames"
tsnctl extract-frames "$OUT/data/val_videos.txt" "$OUT/frames"

# configs/demo.yaml reads demo/frames/...; point it at $OUT when it differs.
LISTS=(-o "data.train_list=$OUT/frames/train_videos_frames.txt" -o "data.val_list=$OUT/frames/val_videos_frames.txt"
       -o "data.test_list=$OUT/frames/val_videos_frames.txt" -o "data.label_file=$OUT/data/labels.txt")
tsnctl train -c configs/demo.yaml "${LISTS[@]}" --output "$OUT/run" --validate   # + metrics.csv, curves.png
tsnctl test -c configs/demo.yaml "${LISTS[@]}" -w "$OUT/run/best.pt" --report-dir "$OUT/run/test_report"
tsnctl export -w "$OUT/run/best.pt" -o "$OUT/run/model.onnx"

tsnctl predict "$OUT/data/videos/expanding_rings/val_000.mp4" -w "$OUT/run/best.pt" --topk 3
tsnctl predict "$OUT/data/videos/falling_rain" -m "$OUT/run/model.onnx" --output "$OUT/run/predictions.csv"
tsnctl predict --stream "$OUT/data/videos/bouncing_ball/val_000.mp4" -w "$OUT/run/best.pt" --stride 8 \
    --save-video "$OUT/run/annotated.mp4"
tsnctl plot "$OUT/run"
