#!/usr/bin/env bash
# Two views of the example photos fused, and two zero-shot runs combined, then scored.
#
#   bash examples/fusion.sh                                    # default models (download once)
#   IMAGE_MODEL=/path/to/clip VISION_MODEL=/path/to/dinov2 bash examples/fusion.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
clip=${IMAGE_MODEL:-openai/clip-vit-base-patch32}
dino=${VISION_MODEL:-facebook/dinov2-small}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$here/.."

# Early fusion: CLIP and DINOv2 embeddings of the same photos, side by side, then averaged after a PCA.
mmcli extract-features examples/photos -o "$work/clip.npy" --model "$clip" --quiet
mmcli extract-features examples/photos -o "$work/dino.npy" --model "$dino" --quiet
mmcli fuse "$work/clip.npy" "$work/dino.npy" -o "$work/concat.npy" --quiet
mmcli fuse "$work/clip.npy" "$work/dino.npy" -o "$work/mean.npy" --method mean --project pca:3 --quiet
mmcli retrieve --index "$work/concat.npy" --queries "$work/concat.npy" --exclude-self -k 1 --quiet \
  | jq -r '"\(.query_id) looks most like \(.hits[0].id)"'

# Late fusion: zero-shot labels from two prompt templates, combined by reciprocal rank, then scored.
labels="astronaut,cat,cup of coffee,rocket"
mmcli classify --features "$work/clip.npy" --labels "$labels" --template "a photo of a {}." --quiet > "$work/photo.jsonl"
mmcli classify --features "$work/clip.npy" --labels "$labels" --template "a picture of a {}." --quiet > "$work/picture.jsonl"
mmcli fuse --results "$work/photo.jsonl" "$work/picture.jsonl" --method rrf --quiet > "$work/fused.jsonl"
mmcli evaluate classification --pred "$work/fused.jsonl" --truth examples/labels.jsonl --format json \
  | jq '.metrics | {accuracy, "macro f1"}'
