"""The documentation's examples, run as a reader runs them: every ``bash`` and ``python`` block of the
README and of each page of the docs site, top to bottom, each page in a fresh scratch folder of its
own, so an example that needs a file its page does not make, or that writes over an earlier one's
output, fails here.

The model ids the pages name are laid out in a Hugging Face cache as tiny checkpoints of the same
architectures, so each command loads its model through the real ``from_pretrained`` path, offline.
The blocks' commands run through a warm process started for the module (``mmcli warm start``), as a
reader with one running would run them; tests/test_warm.py shows each command's warm run equal to its
cold one. A page's folder starts as a reader's scratch folder, a copy of examples/ alone: the page's
set-up block makes the rest (examples/make_inputs.py for the videos, recordings, shards and table,
and the commands that make the features and captions its examples read). A block that cannot run
here is preceded by ``<!-- not run: REASON -->``, and the reasons are few and checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, REPO
from tiny_models import hub_layout

README = REPO / "README.md"


def pages() -> list[Path]:
    """The README, then every page of the docs site in the order its nav lists them."""
    import yaml

    def walk(entries) -> list[str]:
        found = []
        for entry in entries:
            value = entry if isinstance(entry, str) else next(iter(entry.values()))
            found += walk(value) if isinstance(value, list) else [value]
        return found

    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # (tags it cannot build stay text)
    return [README, *(REPO / "docs" / name for name in walk(config["nav"]))]


def all_blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, line, code, reason it is not run or None) of every ``bash`` block, in reading order."""
    return [(str(page.relative_to(REPO)), *block) for page in pages() for block in shell_blocks(page.read_text())]


SKIP = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*$")

# Each hub id the README names, and the tiny checkpoint of its architecture that stands in for it.
HUB_IDS = {
    "openai/clip-vit-base-patch32": "clip",
    "Salesforce/blip-image-captioning-base": "blip",
    "facebook/dinov2-small": "dinov2",
    "google/siglip-base-patch16-224": "siglip",
    "microsoft/xclip-base-patch32": "xclip",
    "MCG-NJU/videomae-base": "videomae",
    "laion/clap-htsat-unfused": "clap",
    "laion/larger_clap_general": "clap",
    "openai/whisper-small": "whisper",
    "microsoft/git-base-vatex": "git_video",
    "Salesforce/blip2-opt-2.7b": "blip2",
    "HuggingFaceTB/SmolVLM-256M-Instruct": "idefics3",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": "open_clip",
    "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k": "timm",
    "google/vit-base-patch16-224": "vit_classifier",
    "MCG-NJU/videomae-base-finetuned-kinetics": "videomae",
    "MIT/ast-finetuned-audioset-10-10-0.4593": "ast_classifier",
}


def example_blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line number, language, code, reason it is not run or None) of each ``bash`` and ``python``
    block, in order."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        fence = lines[index].strip()
        if fence in ("```bash", "```python"):
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
            above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            skip = SKIP.match(above.strip())
            blocks.append((start + 1, fence[3:], "\n".join(lines[start:end]), skip["reason"] if skip else None))
            index = end
        index += 1
    return blocks


def shell_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, reason it is not run or None) of each ``bash`` block, in order."""
    return [(line, code, reason) for line, language, code, reason in example_blocks(text) if language == "bash"]


def hub_cache(root: Path, tiny_models) -> Path:
    """An ``HF_HOME`` whose hub cache holds each of :data:`HUB_IDS` as its tiny stand-in."""
    for hub_id, name in HUB_IDS.items():
        hub_layout(root, hub_id, tiny_models[name])
    return root


def readers_files(folder: Path) -> None:
    """The reader's scratch folder: a copy of the repository's examples/, and nothing else (the pages
    make what else they read, with examples/make_inputs.py)."""
    shutil.copytree(EXAMPLES, folder / "examples")


def _pip_of_the_test_environment() -> str:
    """A ``pip`` for the blocks: the test environment has every extra installed already, so a block's
    ``pip install ".[EXTRA,...]"`` only has to name extras the project declares."""
    table = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    known = "|".join(sorted(re.findall(r"^([\w-]+) = \[", table, re.MULTILINE)))
    return (
        'pip() { [ "$1" = install ] || return 1; shift; for given in "$@"; do '
        '[[ "$given" == ".["*"]" ]] || { echo "pip install $given: not the project with extras" >&2; return 1; }; '
        'names="${given#.[}"; IFS=, read -ra extras <<< "${names%]}"; for extra in "${extras[@]}"; do '
        f'case "$extra" in {known}) ;; *) echo "pip install $given: $extra is not an extra of the project" >&2; '
        "return 1;; esac; done; done; }\n"
    )


def test_skipped_blocks_are_few_and_say_why():
    blocks = all_blocks()
    skipped = [(page, line, reason) for page, line, _, reason in blocks if reason is not None]
    assert all(len(reason) > 10 for *_, reason in skipped), skipped
    assert len(skipped) <= 16, skipped  # installs, the suite, servers, GPUs, object storage, Ray, benchmarks
    assert len(blocks) - len(skipped) >= 15
    every = {path for path in (REPO / "docs").rglob("*.md")}
    assert every - set(pages()) == set(), "a page the nav leaves out is never run"


def test_every_hub_id_the_run_blocks_name_has_a_stand_in():
    named = set()
    for _, _, code, reason in all_blocks():
        if reason is None:
            named |= set(re.findall(r"(?:--model|--speech)\s+(?:hf-hub:)?([\w.-]+/[\w.-]+)(?=\s|$)", code))
    assert named - set(HUB_IDS) == set()


@pytest.fixture(scope="module")
def readers_env(mmcli_exe, tiny_models, tmp_path_factory) -> dict[str, str]:
    """A reader's shell: the hub ids the pages name cached as their tiny stand-ins, offline, with a warm
    process started for the pages' commands."""
    root = tmp_path_factory.mktemp("reader")
    warm = root / "warm"
    warm.mkdir(mode=0o700)
    env = {
        **os.environ,
        "HF_HOME": str(hub_cache(root / "hf", tiny_models)),
        "HF_HUB_OFFLINE": "1",
        "TORCH_HOME": str(tiny_models["torchvision"]),  # torchvision's weights, as torch caches downloads
        "PATH": f"{Path(mmcli_exe).parent}{os.pathsep}{os.environ['PATH']}",
        "MMCLI_WARM": "on",
        "MMCLI_WARM_SOCKET": str(warm / "warm.sock"),
    }
    started = subprocess.run([mmcli_exe, "warm", "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    yield env
    subprocess.run([mmcli_exe, "warm", "stop"], env=env, capture_output=True, timeout=300)


def _commands_run(mmcli_exe: str, env: dict[str, str]) -> int:
    status = subprocess.run([mmcli_exe, "warm", "status", "--json"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    return json.loads(status.stdout)["commands_run"]


PAGES = [str(page.relative_to(REPO)) for page in pages()]

# Pages whose every example is marked not run (a server, the suite, full-size benchmarks), or that
# hold no examples (the contract, the generated references).
WITHOUT_EXAMPLES_TO_RUN = {
    "docs/commands/serve.md",
    "docs/formats.md",
    "docs/performance.md",
    "docs/development.md",
    "docs/reference/cli.md",
    "docs/reference/python.md",
}


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_top_to_bottom_in_a_scratch_folder_of_its_own(page, mmcli_exe, readers_env, tmp_path):
    blocks = [block for block in example_blocks((REPO / page).read_text()) if block[3] is None]
    assert blocks or page in WITHOUT_EXAMPLES_TO_RUN, f"{page} has no example that runs"
    folder = tmp_path / "scratch"
    folder.mkdir()
    readers_files(folder)
    before = _commands_run(mmcli_exe, readers_env)
    prelude = _pip_of_the_test_environment()
    for line, language, code, _ in blocks:
        shell = ["bash", "-euo", "pipefail", "-c", prelude + code]
        program = shell if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(program, cwd=folder, env=readers_env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{page}:{line}: the block failed\n{code}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{page}:{line}\n{result.stderr[-3000:]}"
    if any(re.search(r"(^|[|;&(]\s*)mmcli ", code, re.MULTILINE) for _, language, code, _ in blocks):
        assert _commands_run(mmcli_exe, readers_env) > before  # the blocks' commands ran warm
