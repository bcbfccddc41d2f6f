"""Writes ``docs/reference/cli.md``: every mmcli command's help, its arguments and options, as the app
itself states them (the same text ``mmcli COMMAND --help`` prints).

    python docs/cli_reference.py            # rewrite the page
    python docs/cli_reference.py --check    # exit 1 when the page differs from the app's help

``tests/test_docs.py`` runs the check, so a changed option cannot leave its reference behind.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parent / "reference" / "cli.md"
# The checkout's own mmcli, whichever one pip installed: the page describes the code beside it.
sys.path.insert(0, str(PAGE.parents[2]))
HEAD = """\
# Command-line reference

Every command, argument and option of `mmcli`, as `mmcli COMMAND --help` states them. This page is
generated from the app by `python docs/cli_reference.py`; the test suite fails when it falls behind.
"""


def _cell(text: str) -> str:
    """One table cell: rich markup's escapes dropped, on one line, as HTML text (``<TAB>`` and the
    ``|`` of choices shown as written, not taken for a tag or a column)."""
    return html.escape(" ".join(text.replace("\\[", "[").split())).replace("|", "&#124;")


def _command_section(command: Any, path: str, parent: Any) -> list[str]:
    ctx = command.context_class(command, info_name=path.split()[-1], parent=parent)
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    lines = [f"## {path}", "", "```text", usage, "```", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in command.params:
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            panel = "Arguments"
            name = (param.metavar or param.name or "").upper()
            record = (name, getattr(param, "help", "") or "")
        else:
            panel = getattr(param, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append((record[0], record[1]))
    for panel, rows in panels.items():
        lines += [f"**{panel}**", "", f"| {'Argument' if panel == 'Arguments' else 'Option'} | Description |",
                  "| --- | --- |"]  # fmt: skip
        lines += [f"| <code>{_cell(flags)}</code> | {_cell(help_text)} |" for flags, help_text in rows]
        lines.append("")
    if command.epilog:
        examples = [line.strip() for line in command.epilog.splitlines()]
        body = [line for line in examples if line and not line.startswith("Examples")]
        lines += ["Examples:", "", "```shell", *body, "```", ""]  # (shown, not run: the command pages' run)
    return lines


def render() -> str:
    """The page: the top-level help, then every command in the order ``mmcli --help`` lists them."""
    from mmcli.cli import click_command

    root = click_command()
    root_ctx = root.context_class(root, info_name="mmcli")
    lines = [HEAD, "## mmcli", "", (root.help or "").strip(), ""]

    def walk(group: Any, path: str, ctx: Any) -> None:
        for name in group.list_commands(ctx):
            command = group.commands[name]
            full = f"{path} {name}"
            if hasattr(command, "commands"):  # a group: its own line, then its commands
                lines.extend([f"## {full}", "", (command.help or "").strip(), ""])
                walk(command, full, command.context_class(command, info_name=name, parent=ctx))
            else:
                lines.extend(_command_section(command, full, ctx))

    walk(root, "mmcli", root_ctx)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main() -> int:
    page = render()
    if "--check" in sys.argv[1:]:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} differs from the app's help: run python docs/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
