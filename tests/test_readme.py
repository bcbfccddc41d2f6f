"""The documentation's shell examples, run as a reader runs them: every ``bash`` block of the README and
then of each page of the docs site, in the site's order (``mkdocs.yml``'s nav), top to bottom, in one
fresh folder, so an example that needs a file an earlier one did not make, or that writes over an
earlier one's output, fails here.

The model ids the pages name are laid out in a Hugging Face cache as tiny checkpoints of the same
architectures, so each command loads its model through the real ``from_pretrained`` path, offline.
The blocks' commands run through a warm process started for the test (``mmcli warm start``), as a
reader with one running would run them; tests/test_warm.py shows each command's warm run equal to its
cold one. The folder starts as a reader's scratch folder, a copy of examples/ alone: the videos,
recordings, shards and table the pages read are made by the documented step that makes them
(examples/make_inputs.py), and everything else an example reads, an earlier example wrote. A block
that cannot run here is preceded by ``<!-- not run: REASON -->``, and the reasons are few and checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import EXAMPLES, REPO

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
}


def shell_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, reason it is not run or None) of each ``bash`` block, in order."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```bash":
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
            above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            skip = SKIP.match(above.strip())
            blocks.append((start + 1, "\n".join(lines[start:end]), skip["reason"] if skip else None))
            index = end
        index += 1
    return blocks


def hub_cache(root: Path, tiny_models) -> Path:
    """An ``HF_HOME`` whose hub cache holds each of :data:`HUB_IDS` as its tiny stand-in."""
    revision = "0" * 40
    for hub_id, name in HUB_IDS.items():
        model = root / "hub" / f"models--{hub_id.replace('/', '--')}"
        shutil.copytree(tiny_models[name], model / "snapshots" / revision)
        (model / "refs").mkdir()
        (model / "refs" / "main").write_text(revision)
    return root


def readers_files(folder: Path) -> None:
    """The reader's scratch folder: a copy of the repository's examples/, and nothing else (the pages
    make what else they read, with examples/make_inputs.py)."""
    shutil.copytree(EXAMPLES, folder / "examples")


def _pip_of_the_test_environment() -> str:
    """A ``pip`` for the blocks: the test environment has every extra installed already, so a block's
    ``pip install ".[EXTRA]"`` only has to name an extra the project declares."""
    table = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^([\w-]+) = \[", table, re.MULTILINE)
    known = "|".join(f'".[{name}]"' for name in sorted(extras))
    return (
        f'pip() {{ [ "$1" = install ] || return 1; shift; for extra in "$@"; do case "$extra" in {known}) ;; '
        f'*) echo "pip install $extra: not an extra of the project" >&2; return 1;; esac; done; }}\n'
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
            named |= set(re.findall(r"(?:--model|--speech)\s+([\w.-]+/[\w.-]+)(?=\s|$)", code))
    assert named - set(HUB_IDS) == set()


def test_the_readme_and_the_docs_run_top_to_bottom_in_one_folder(mmcli_exe, tiny_models, tmp_path):
    folder = tmp_path / "reader"
    folder.mkdir()
    readers_files(folder)
    warm = tmp_path / "warm"
    warm.mkdir(mode=0o700)
    env = {
        **os.environ,
        "HF_HOME": str(hub_cache(tmp_path / "hf", tiny_models)),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(mmcli_exe).parent}{os.pathsep}{os.environ['PATH']}",
        "MMCLI_WARM": "on",
        "MMCLI_WARM_SOCKET": str(warm / "warm.sock"),
    }
    started = subprocess.run([mmcli_exe, "warm", "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    prelude = _pip_of_the_test_environment()
    ran = 0
    try:
        for page, line, code, reason in all_blocks():
            if reason is not None:
                continue
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + code], cwd=folder, env=env,
                                    capture_output=True, text=True, timeout=900)  # fmt: skip
            assert result.returncode == 0, f"{page}:{line}: the block failed\n{code}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, f"{page}:{line}\n{result.stderr[-3000:]}"
            ran += 1
        status = subprocess.run([mmcli_exe, "warm", "status", "--json"], env=env, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert json.loads(status.stdout)["commands_run"] >= 60  # the blocks' commands ran warm
    finally:
        subprocess.run([mmcli_exe, "warm", "stop"], env=env, capture_output=True, timeout=300)
    assert ran >= 15
