"""Start-up: how soon a command's first result comes, cold and through a warm process.

For ``caption`` (a random full-size BLIP-base) and ``extract-features`` (a random full-size CLIP
ViT-B/32), on one 640x480 JPEG, each row the median of ``--runs`` fresh processes:

- ``import torch``: ``python -c "import torch"``;
- ``plain script``: the shortest transformers script that does the same (import, ``from_pretrained``,
  the processor, one ``generate`` / ``get_image_features``); it also reports its own split into
  torch's import, loading (the modeling module's import and ``from_pretrained``) and inference;
- ``mmcli cold``: the command with no warm process (``MMCLI_WARM=off``);
- ``mmcli warm, model kept``: through a warm process that has the model loaded;
- ``mmcli warm, new model``: through a warm process, the same checkpoint under a new path each run
  (links to the same files), so it is loaded as a model never used before would be;
- ``inference alone``: the processor and the model on the image, in a process that has it loaded.

Targets: warm with the model kept within inference alone + 0.3 s; cold within 1.2x (torch's import
+ loading + inference), torch's import taken both as the plain script measures it inside itself and as
``python -c "import torch"`` (with the interpreter's own start). Also ``mmcli --help`` and a refused command
(a missing input), which import no torch.

    python benchmarks/startup.py [--runs 5] [--only caption|extract]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caption_throughput import make_blip_base  # noqa: E402  (benchmarks/ is on the path when run as a script)
from common import make_images  # noqa: E402
from extract_throughput import make_clip_b32  # noqa: E402

PLAIN = {
    "caption": """
import json, sys, time
started = time.perf_counter()
import torch
imported = time.perf_counter()
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor
model_path, image = sys.argv[1:]
model = BlipForConditionalGeneration.from_pretrained(model_path).eval()
processor = BlipProcessor.from_pretrained(model_path)
loaded = time.perf_counter()
with torch.inference_mode():
    inputs = processor(images=Image.open(image).convert("RGB"), return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
print(json.dumps({"caption": processor.batch_decode(ids, skip_special_tokens=True)[0]}))
done = time.perf_counter()
print(json.dumps({"torch": imported - started, "load": loaded - imported, "infer": done - loaded}), file=sys.stderr)
""",
    "extract": """
import json, sys, time
started = time.perf_counter()
import torch
imported = time.perf_counter()
import numpy as np
from PIL import Image
from transformers import CLIPModel, CLIPProcessor
model_path, image, out = sys.argv[1:]
model = CLIPModel.from_pretrained(model_path).eval()
processor = CLIPProcessor.from_pretrained(model_path)
loaded = time.perf_counter()
with torch.inference_mode():
    output = model.get_image_features(**processor(images=Image.open(image).convert("RGB"), return_tensors="pt"))
rows = output if isinstance(output, torch.Tensor) else output.pooler_output
np.save(out, torch.nn.functional.normalize(rows, dim=-1).numpy())
done = time.perf_counter()
print(json.dumps({"torch": imported - started, "load": loaded - imported, "infer": done - loaded}), file=sys.stderr)
""",
}

# Inference alone: the model loaded first, then the median of several passes on the image.
ALONE = """
import json, statistics, sys, time
import torch
from PIL import Image
kind, model_path, image, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "caption":
    from transformers import BlipForConditionalGeneration as Model, BlipProcessor as Processor
else:
    from transformers import CLIPModel as Model, CLIPProcessor as Processor
model, processor = Model.from_pretrained(model_path).eval(), Processor.from_pretrained(model_path)
times = []
for _ in range(runs + 1):
    started = time.perf_counter()
    with torch.inference_mode():
        inputs = processor(images=Image.open(image).convert("RGB"), return_tensors="pt")
        if kind == "caption":
            model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
        else:
            model.get_image_features(**inputs)
    times.append(time.perf_counter() - started)
print(json.dumps(statistics.median(times[1:])))
"""


def timed(command: list[str], env: dict[str, str], runs: int) -> tuple[float, list[str]]:
    """Median wall seconds of ``runs`` runs, and each run's stderr."""
    times, errors = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        errors.append(result.stderr)
    return statistics.median(times), errors


def linked_copy(model: Path, folder: Path) -> Path:
    """The checkpoint under a new path, its files hard links to the originals."""
    folder.mkdir(parents=True)
    for file in model.iterdir():
        os.link(file, folder / file.name)
    return folder


def measure(kind: str, model: Path, image: Path, work: Path, runs: int, env: dict[str, str]) -> dict[str, float]:
    mmcli = shutil.which("mmcli") or sys.exit("the mmcli executable is not on PATH (pip install -e .)")

    def command(model_path: Path, run: int) -> list[str]:
        if kind == "caption":
            return [mmcli, "caption", str(image), "--model", str(model_path), "--max-new-tokens", "10",
                    "--min-new-tokens", "10", "-q"]  # fmt: skip
        return [mmcli, "extract-features", str(image), "--model", str(model_path), "-o", str(work / f"{run}.npy"),
                "-q", "--overwrite"]  # fmt: skip

    row: dict[str, float] = {}
    cold_env = {**env, "MMCLI_WARM": "off"}
    row["import torch"], _ = timed([sys.executable, "-c", "import torch"], cold_env, runs)
    plain = [sys.executable, "-c", PLAIN[kind], str(model), str(image)]
    if kind == "extract":
        plain.append(str(work / "plain.npy"))
    row["plain script"], errors = timed(plain, cold_env, runs)
    parts = [json.loads(text.strip().splitlines()[-1]) for text in errors]
    for part in ("torch", "load", "infer"):
        row[f"plain: {part}"] = statistics.median(p[part] for p in parts)
    row["mmcli cold"], _ = timed(command(model, 0), cold_env, runs)

    warm_env = {**env, "MMCLI_WARM": "on", "MMCLI_WARM_SOCKET": str(work / "warm" / "warm.sock")}
    (work / "warm").mkdir(mode=0o700)
    subprocess.run([mmcli, "warm", "start", "-q"], env=warm_env, check=True)
    try:
        timed(command(model, 0), warm_env, 1)  # the first use: the warm process keeps it after
        row["mmcli warm, model kept"], _ = timed(command(model, 0), warm_env, runs)
        new = []
        for run in range(runs):
            fresh = linked_copy(model, work / f"copy-{run}")
            new.append(timed(command(fresh, run), warm_env, 1)[0])
        row["mmcli warm, new model"] = statistics.median(new)
        status = subprocess.run([mmcli, "warm", "status", "--json"], env=warm_env, capture_output=True, text=True)
        row["warm commands run"] = json.loads(status.stdout)["commands_run"]
    finally:
        subprocess.run([mmcli, "warm", "stop", "-q"], env=warm_env)
    alone = subprocess.run([sys.executable, "-c", ALONE, kind, str(model), str(image), str(runs)], env=cold_env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    row["inference alone"] = json.loads(alone.stdout)
    return row


def refusals(work: Path, runs: int, env: dict[str, str]) -> dict[str, float]:
    mmcli = shutil.which("mmcli") or "mmcli"
    cold_env = {**env, "MMCLI_WARM": "off"}
    missing = [mmcli, "caption", str(work / "missing.jpg")]
    times = {"python -c pass": timed([sys.executable, "-c", "pass"], cold_env, runs)[0]}
    times["mmcli --help"] = timed([mmcli, "--help"], cold_env, runs)[0]
    started = []
    for _ in range(runs):
        begin = time.perf_counter()
        result = subprocess.run(missing, capture_output=True, text=True, env=cold_env)
        started.append(time.perf_counter() - begin)
        assert result.returncode == 2, result.stderr
    times["mmcli caption MISSING.jpg (refused)"] = statistics.median(started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("caption", "extract"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, median of {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, seconds in refusals(work, args.runs, env).items():
            print(f"{name:44s} {seconds:6.2f} s")
        image = make_images(work / "images", 1)[0]
        makers = {"caption": (make_blip_base, "BLIP-base"), "extract": (make_clip_b32, "CLIP ViT-B/32")}
        for kind, (make, label) in makers.items():
            if args.only and kind != args.only:
                continue
            model = make(work / kind)
            folder = work / f"{kind}-runs"
            folder.mkdir()
            row = measure(kind, model, image, folder, args.runs, env)
            command = "caption" if kind == "caption" else "extract-features"
            print(f"\nmmcli {command}, {label} (random weights), one image")
            for name, seconds in row.items():
                if name != "warm commands run":
                    print(f"  {name:42s} {seconds:6.2f} s")
            budget = row["plain: torch"] + row["plain: load"] + row["plain: infer"]
            print(f"  cold / (torch + load + inference)          x{row['mmcli cold'] / budget:.2f}  (target <= 1.2)")
            whole = row["import torch"] + row["plain: load"] + row["plain: infer"]
            print(f"  cold / (python -c 'import torch' + load + inference) x{row['mmcli cold'] / whole:.2f}")
            print(f"  cold / plain script                        x{row['mmcli cold'] / row['plain script']:.2f}")
            kept = row["mmcli warm, model kept"] - row["inference alone"]
            print(f"  warm kept - inference alone                {kept:+.2f} s  (target <= +0.30)")
            print(
                f"  cold / warm kept                           x{row['mmcli cold'] / row['mmcli warm, model kept']:.1f}"
            )
            print(f"  (commands the warm process ran: {row['warm commands run']:.0f})")


if __name__ == "__main__":
    main()
