#!/usr/bin/env bash
# Search a folder of recordings two ways: by what is said in them (Whisper transcripts, embedded
# as text) and by how they sound (CLAP), with one text query.
#
#   bash examples/audio.sh sounds/ "someone talking about the weather"
#   MMCLI_SPEECH_MODEL=openai/whisper-tiny MMCLI_TEXT_MODEL=... MMCLI_AUDIO_MODEL=... bash examples/audio.sh sounds/ "rain"
set -euo pipefail
folder=${1:?a folder of audio or video files}
query=${2:-"a dog barking"}
text_model=${MMCLI_TEXT_MODEL:-sentence-transformers/all-MiniLM-L6-v2}
audio_model=${MMCLI_AUDIO_MODEL:-laion/clap-htsat-unfused}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# exit status 1 means some files failed (each is named on stderr); the rest are there
some_failed() { [ "$1" -eq 1 ]; }

# what is said: a record per segment of speech, embedded by its text (ids keep the time range)
mmcli transcribe "$folder" -o "$work/transcripts.jsonl" --quiet || some_failed $?
# (error records, which have no text, are left out)
jq -c 'select(.text) | {id, text, source}' "$work/transcripts.jsonl" \
  | mmcli extract-features --modality text - -o "$work/said.npy" --model "$text_model" --quiet
echo "said:"
mmcli retrieve --index "$work/said.npy" --query "$query" -k 3 | jq -r '.hits[] | "  \(.score)\t\(.id)"'

# how it sounds: a row per recording, the mean of its 10 s windows
mmcli extract-features "$folder" -o "$work/sounds.npy" --model "$audio_model" --quiet || some_failed $?
echo "sounds like:"
mmcli retrieve --index "$work/sounds.npy" --query "$query" -k 3 | jq -r '.hits[] | "  \(.score)\t\(.id)"'
