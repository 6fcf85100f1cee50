"""Build, push, pin: ``tox -e release -- REGISTRY/podlister-sidecar``.

Builds the image, pushes it with buildah (which writes the digest the registry stored),
writes that digest into the overlay as the image of the sidecar, and prints the command that
deploys it. What it writes is what ``kustomize edit set image`` would write.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from image.build import REPO, build_image

PUBLISHED_NAME = "ghcr.io/podlister/podlister-sidecar"  # the name the base's Deployment uses


def version() -> str:
    """The project's version, the image's tag."""
    for line in (REPO / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise SystemExit("no version in pyproject.toml")


def push(local: str, remote: str, *, tls_verify: bool) -> str:
    """Push local to remote; the digest of the manifest the registry stored."""
    with tempfile.TemporaryDirectory() as folder:
        digest_file = Path(folder) / "digest"
        subprocess.run(
            [
                "buildah",
                "push",
                f"--tls-verify={'true' if tls_verify else 'false'}",
                "--digestfile",
                str(digest_file),
                local,
                f"docker://{remote}",
            ],
            check=True,
            timeout=600,
        )
        return digest_file.read_text(encoding="utf-8").strip()


def pin(overlay: Path, repository: str, digest: str) -> None:
    """Make the overlay's sidecar image repository@digest (kustomize's images entry)."""
    path = overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
    images = [i for i in kustomization.get("images", []) if i.get("name") != PUBLISHED_NAME]
    images.append({"name": PUBLISHED_NAME, "newName": repository, "digest": digest})
    kustomization["images"] = images
    text = path.read_text(encoding="utf-8")
    comments = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    path.write_text(comments + yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Build, push, pin, and print the apply command."""
    parser = argparse.ArgumentParser(prog="tox -e release --", description=__doc__)
    parser.add_argument(
        "repository", help="where to push, e.g. registry.example.com/podlister-sidecar"
    )
    parser.add_argument("--overlay", type=Path, default=REPO / "kustomize" / "overlays" / "do")
    parser.add_argument("--base", help="PYTHON_IMAGE to build on (default: the Dockerfile's)")
    parser.add_argument(
        "--insecure", action="store_true", help="plain http (a registry on loopback)"
    )
    args = parser.parse_args(argv)
    tag = version()
    built = build_image(f"localhost/podlister-sidecar:{tag}", base=args.base)
    digest = push(built, f"{args.repository}:{tag}", tls_verify=not args.insecure)
    pin(args.overlay, args.repository, digest)
    print(f"pushed {args.repository}:{tag} as {digest}")
    print(f"pinned in {args.overlay / 'kustomization.yaml'}")
    print(f"deploy: kubectl apply -k {args.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
