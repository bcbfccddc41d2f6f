#!/usr/bin/env bash
# Embed the example photos, search them with a text query, and print the best hits with jq.
#
#   bash examples/search.sh "a cat"                       # default model (downloads once)
#   MMCLI_MODEL=/path/to/checkpoint bash examples/search.sh "a rocket"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
query=${1:-"a photo of a cat"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mmcli extract-features "$here/photos" -o "$work/photos.npy" --quiet
mmcli retrieve --index "$work/photos.npy" --query "$query" -k 3 \
  | jq -r '.hits[] | "\(.rank)\t\(.score)\t\(.id)"'
