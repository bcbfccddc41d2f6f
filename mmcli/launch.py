"""The ``mmcli`` executable: a command goes to the user's warm process when one is running (see
``mmcli warm --help``), and runs here otherwise. Only the standard library is imported before that
choice, so a warm run costs an interpreter's start and a few milliseconds."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] != ["warm"]:
        from mmcli.warm import client

        status = client.run(sys.argv)
        if status is not None:
            sys.exit(status)
    from mmcli.cli import main as run_here

    run_here()
