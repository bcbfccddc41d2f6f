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
    max_upload_megapixels: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Largest image upload accepted, in decoded megapixels, read from its header before any "
            "decoding (larger: HTTP 413); far below a local run's --max-pixels, as a 164 KB PNG can claim "
            "170 megapixels, 3 GB decoded.",
            rich_help_panel=SERVER,
        ),
    ] = 40.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another name requests may give as their Host (repeat for more; '*': any). Only "
            "127.0.0.1, localhost, [::1] and --host are answered otherwise (a 400 defeats DNS rebinding).",
            rich_help_panel=SERVER,
            show_default=False,
        ),
    ] = None,
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
        max_upload_megapixels=max_upload_megapixels,
        hosts=allow_host or [],
        reporter=CommandReporter(quiet=quiet),
    )
