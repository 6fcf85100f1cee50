"""cosign, built from its Go module (go.mod here): the release signs and attests with it.

Built once per go.sum into the verified cache, like the manifest linters. cosign is the
sigstore project's own signer, the one a cluster's admission policy (Kyverno, the policy
controller) verifies against; building it here from the Go module proxy needs no download
site.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from support import verified_cache as cache

MODULE = Path(__file__).resolve().parent
PACKAGE = "github.com/sigstore/cosign/v3/cmd/cosign"
BUILD_TIMEOUT = 1800  # seconds: a cold build here took 3 min 27 s (modules cached)


class CosignBuildError(Exception):
    """cosign could not be built; the message says why in one line."""


def build() -> Path:
    """The cosign binary, built once per go.sum (a verified cache)."""
    go = shutil.which("go")
    if go is None:
        msg = "cosign is built from its Go module: install Go 1.26 or newer"
        raise CosignBuildError(msg)
    key = hashlib.sha256((MODULE / "go.sum").read_bytes()).hexdigest()[:12]

    def fill(staging: Path) -> None:
        result = subprocess.run(
            [go, "build", "-trimpath", "-o", f"{staging}/", PACKAGE],
            cwd=MODULE,
            check=False,
            timeout=BUILD_TIMEOUT,
            capture_output=True,
            text=True,
            env={**os.environ, "CGO_ENABLED": "0"},
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["no output"]
            msg = f"go build of cosign failed: {lines[-1]}"
            raise CosignBuildError(msg)

    return cache.filled(cache.root() / f"cosign-{key}", fill) / "cosign"
