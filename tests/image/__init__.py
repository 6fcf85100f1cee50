"""The sidecar image: built with buildah against a Debian base made here, and released."""
