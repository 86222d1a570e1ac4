"""Fetching the public parts of the real datasets — only ever with ``--download``.

:func:`fetch_zip` downloads one zip archive and unpacks it into a folder that appears only when
complete (``core.store.atomic_dir``), so an interrupted download never looks like data; an
unreachable host is one ``UserError`` saying where to get the data by hand.
"""
from __future__ import annotations

import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from core.errors import UserError
from core.store import atomic_dir


def fetch_zip(url: str, dest: Path, by_hand: str, timeout: float = 30) -> Path:
    """Download the zip at ``url`` and unpack it as the folder ``dest``; ``by_hand`` completes the
    one-line error when the host cannot be reached ("download ... into DIR")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            blob = r.read()
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot reach {urlparse(url).hostname} ({getattr(e, 'reason', e)}); {by_hand}") from None
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z, atomic_dir(Path(dest)) as tmp:
            z.extractall(tmp)
    except zipfile.BadZipFile:
        raise UserError(f"{url}: the server returned no zip archive; {by_hand}") from None
    return Path(dest)
