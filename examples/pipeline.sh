#!/usr/bin/env bash
# Embed the example photos and captions with one model, then show which caption fits each photo.
#
#   bash examples/pipeline.sh                       # default model (downloads once)
#   MMCLI_MODEL=/path/to/checkpoint bash examples/pipeline.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mmcli extract-features "$here/photos" -o "$work/photos.npy"
mmcli extract-features --modality text "$here/captions.txt" -o "$work/captions.npy"

# Rows are L2-normalised, so a matrix product gives cosine similarities.
python - "$work" <<'PY'
import json, sys
import numpy as np

work = sys.argv[1]
photos, captions = np.load(f"{work}/photos.npy"), np.load(f"{work}/captions.npy")
photo_ids = [json.loads(line)["id"] for line in open(f"{work}/photos.jsonl")]
texts = [json.loads(line)["source"] for line in open(f"{work}/captions.jsonl")]
for photo, row in zip(photo_ids, photos @ captions.T):
    print(f"{photo}\t{texts[int(row.argmax())]}\t{row.max():.3f}")
PY
