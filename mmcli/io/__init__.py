"""Reading and writing mmcli's plain files: feature sets, JSONL streams, input lists."""
