"""The one thing a test adds to a shipped overlay: the images, as an air-gapped user would.

The base pins nginx by digest and the do overlay names the published sidecar; neither can be
pulled here. A small overlay with the shipped one as its base sets both to the node's
registry (``images:`` only) and may add a test-only patch, named where it is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = {
    "nginx": "nginxinc/nginx-unprivileged",
    "sidecar": "ghcr.io/podlister/podlister-sidecar",
}


def image_overlay(
    folder: Path,
    shipped: str,
    image_refs: dict[str, str],
    patches: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the overlay over kustomize/overlays/<shipped> into folder; folder. ``extra``:
    more of a kustomization (components, generators), paths relative to folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for key, published in PUBLISHED.items():
        name, digest = image_refs[key].split("@")
        images.append({"name": published, "newName": name, "digest": digest})
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Relative: kustomize refuses an absolute path as a base.
        "resources": [os.path.relpath(REPO / "kustomize" / "overlays" / shipped, folder)],
        "images": images,
    }
    if patches:
        kustomization["patches"] = patches
    kustomization.update(extra or {})
    # JSON is YAML: kustomize reads it as written.
    (folder / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
    return folder
