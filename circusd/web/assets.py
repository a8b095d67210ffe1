"""The console's own script, style sheet and icon, read once at start.

Only these files are served (a fixed table, no path from the request
touches the file system); nothing is fetched from anywhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> tuple[dict[str, Asset], str]:
    """Every asset by name, and a version string that changes with any."""
    assets = {}
    whole = hashlib.sha256()
    for name, content_type in TYPES.items():
        body = (STATIC / name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:20]
        whole.update(digest.encode())
        assets[name] = Asset(body, content_type, f'"{digest}"')
    return assets, whole.hexdigest()[:12]
