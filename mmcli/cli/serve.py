"""``mmcli serve``: a local search page and JSON API over a feature set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmcli.cli import options as opt
from mmcli.cli.common import CommandReporter, reports_errors

EXAMPLES = """\
Examples:

  mmcli serve --index photos.npy            # then open http://127.0.0.1:8000/

  curl 'http://127.0.0.1:8000/api/search?q=a+red+car&k=5'

  curl -F image=@examples/photos/chelsea.jpg http://127.0.0.1:8000/api/search
"""

SERVER = "Server"


@reports_errors
def serve(
    index: Annotated[
        Path,
        typer.Option(
            "--index", "-i", help="Feature set to search (.npy with its .jsonl, or a sharded DIR/).", show_default=False
        ),
    ] = ...,  # type: ignore[assignment]
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; anything but loopback serves the set to the network.", rich_help_panel=SERVER
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).", rich_help_panel=SERVER)
    ] = 8000,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1, help="Most queries embedded in one model call; 1 turns micro-batching off.", rich_help_panel=SERVER
        ),
    ] = 32,
    linger_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long the model waits for more queries to join a batch, in milliseconds.",
            rich_help_panel=SERVER,
        ),
    ] = 5.0,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            min=0.001, help="Largest image upload accepted, in MB (larger: HTTP 413).", rich_help_panel=SERVER
        ),
    ] = 20.0,
    model: opt.QueryModel = None,
    device: opt.DeviceOption = opt.Device.auto,
    dtype: opt.DTypeOption = opt.DType.auto,
    quiet: opt.Quiet = False,
) -> None:
    """Search a feature set from the browser: a search page at / and a JSON API at /api/search."""
    from mmcli.web.serve import serve as run_server

    run_server(
        index,
        host=host,
        port=port,
        model=model,
        device=device.value,
        dtype=dtype.value,
        max_batch=max_batch,
        linger=linger_ms / 1000,
        max_upload_mb=max_upload_mb,
        reporter=CommandReporter(quiet=quiet),
    )
