"""``mmcli warm start|status|stop``: the background process that makes the next command start at once."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmcli.cli.common import Command, Group, note, reports_errors

HELP = """\
A per-user background process that keeps torch, transformers and the models you used last loaded, and
runs each mmcli command in a fresh child of itself: the same output, messages, files and exit status
as without it, from the first batch in a fraction of a second instead of several seconds.

While it runs, every `mmcli` command goes through it (except `mmcli warm`), for your user only
(a Unix socket in a folder only you can enter). Set MMCLI_WARM=auto to start it on first use,
MMCLI_WARM=off to bypass it; MMCLI_WARM_SOCKET chooses the socket. A command whose environment or
mmcli version differs from the warm process's runs on its own, as it would without one.
"""

EXAMPLES = """\
Examples:

  mmcli warm start

  mmcli caption photos/ -o captions.jsonl      # runs in the warm process

  mmcli warm status

  mmcli warm stop
"""

app = typer.Typer(cls=Group, help=HELP, no_args_is_help=True)


@app.command("start", cls=Command, epilog=EXAMPLES)
@reports_errors
def start(
    idle: Annotated[
        float, typer.Option(help="Leave after this many seconds without a command.", min=1, envvar="MMCLI_WARM_IDLE")
    ] = 900.0,
    max_models: Annotated[
        int, typer.Option(help="Models kept loaded at most; the least recently used goes first.", min=0)
    ] = 3,
    max_memory: Annotated[
        float | None,
        typer.Option(help="GiB of memory the warm process may hold with its models [default: half the machine's]."),
    ] = None,
    foreground: Annotated[bool, typer.Option(help="Run in this terminal, logging to stderr, until Ctrl-C.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Say nothing on success.")] = False,
) -> None:
    """Start the warm process in the background (a no-op where one serves this environment already)."""
    from mmcli.warm import control
    from mmcli.warm.server import Limits

    limits = Limits(idle=idle, max_models=max_models, max_memory=int((max_memory or 0) * 2**30))
    if foreground:
        from mmcli.cli import click_command, main

        control.serve(main, limits, click_command)
        return
    answer, new = control.start(limits)
    verb = "started" if new else "already running"
    note(f"warm process {answer['pid']} {verb} ({answer['socket']})", quiet=quiet)


@app.command("status", cls=Command, epilog=EXAMPLES)
@reports_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="The status as one JSON object on stdout.")] = False,
) -> None:
    """Whether a warm process runs, what it keeps loaded and how long until it leaves (exit 1 if none)."""
    from mmcli.warm import control, protocol

    answer = control.status()
    if answer is None:
        if as_json:
            typer.echo(json.dumps({"running": False, "socket": protocol.socket_path()}))
        else:
            note(f"no warm process ({protocol.socket_path()})")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"running": True, **{k: v for k, v in answer.items() if k != "ok"}}))
        return
    idle = answer["idle_left"]
    lines = [
        f"warm process {answer['pid']} on {answer['socket']}, up {_duration(answer['uptime'])}",
        f"  commands: {answer['commands_run']} run, {answer['commands_running']} running, "
        f"{answer['refused']} clients refused",
        "  leaves after "
        + _duration(answer["idle_limit"])
        + " without a command"
        + (f" ({_duration(idle)} from now)" if idle is not None else ""),
        f"  memory: {answer['resident_bytes'] / 2**30:.2f} GiB of {answer['max_memory'] / 2**30:.1f} GiB",
        f"  models kept ({len(answer['models'])} of {answer['max_models']}, most recent first):",
        *(f"    {m['kind']} {m['name']} ({m['device']}, {m['dtype']})" for m in answer["models"]),
    ]
    if not answer["same_environment"]:
        lines.append("  it serves another mmcli version or environment: commands from here run on their own")
    typer.echo("\n".join(lines))


@app.command("stop", cls=Command, epilog=EXAMPLES)
@reports_errors
def stop(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Say nothing.")] = False) -> None:
    """Stop the warm process once the commands it runs have ended."""
    from mmcli.warm import control

    pid = control.stop()
    note(f"warm process {pid} stopped" if pid else "no warm process was running", quiet=quiet)


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
