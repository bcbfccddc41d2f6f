"""The documentation site: its command-line reference is the app's own help, and it builds with
``mkdocs build --strict`` (no broken link, no missing page), which a broken link fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_cli_reference_is_the_apps_help():
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import cli_reference
    finally:
        sys.path.remove(str(REPO / "docs"))
    page = cli_reference.PAGE.read_text()
    assert page == cli_reference.render(), "docs/reference/cli.md is behind the app: run python docs/cli_reference.py"
    from mmcli.cli import click_command

    for name in click_command().commands:  # every command has its section, with its options' help
        assert f"\n## mmcli {name}\n" in page, name
    assert "| <code>--max-upload-megapixels &lt;float range&gt;</code> |" in page and "MMCLI_CAPTION_MODEL" in page


def _build(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(folder / "site")],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "mkdocs.yml", copy)
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copytree(REPO / "mmcli", copy / "mmcli")  # the Python API pages read its docstrings
    built = _build(copy)
    assert built.returncode == 0, built.stderr[-3000:]
    page = (copy / "site" / "reference" / "python" / "index.html").read_text()
    assert "extract_features" in page and "Embed" in page  # a docstring made it onto the page
    # It reads offline: no page loads a stylesheet, script or font from another host.
    for built_page in (copy / "site").rglob("*.html"):
        fetched = re.findall(r'<(?:link|script)[^>]*(?:href|src)="(https?:)?//[^"]*"', built_page.read_text())
        assert fetched == [], (built_page, fetched)
    with open(copy / "docs" / "index.md", "a") as index:
        index.write("\nSee [the missing page](reference/missing.md).\n")
    broken = _build(copy)
    assert broken.returncode != 0 and "reference/missing.md" in broken.stderr, broken.stderr[-3000:]
