"""Folders laid out the way the kubelet writes ConfigMap, Secret and projected volumes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def write_volume(root: Path, version: str, files: dict[str, str]) -> None:
    """Lay out or update an atomically written volume: the files go into ``..<version>``,
    the ``..data`` symlink is swapped to it in one rename, and each visible name is a symlink
    through ``..data`` (so readers never see a mix of old and new files).
    """
    data = root / f"..{version}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text, encoding="utf-8")
    link = root / "..data_tmp"
    link.symlink_to(data.name)
    link.rename(root / "..data")
    for name in files:
        visible = root / name
        if not visible.is_symlink():
            visible.symlink_to(f"..data/{name}")
