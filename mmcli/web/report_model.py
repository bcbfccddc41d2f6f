"""What a report page shows, as one data type: the page's templates and the contact sheet both draw it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmcli.web.thumbnails import DEFAULT_THUMB_SIZE


@dataclass
class Report:
    """The page's content, as the templates and the contact sheet draw it."""

    kind: str
    title: str
    records: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)  # kind-specific entries, in input order
    evaluation: dict[str, Any] | None = None  # for kind "evaluate"
    missing: dict[str, str] = field(default_factory=dict)
    images: int = 0
    link_images: bool = False
    thumb_size: int = DEFAULT_THUMB_SIZE
