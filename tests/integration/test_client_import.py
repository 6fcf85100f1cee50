"""The client imported in part in a pod (sidecar/api/client_import.py): its layout pinned for
the locked version, and the plain import, logged, whenever that layout is not what it
expects; outside a cluster the whole client, as usual.

Each check runs in a fresh interpreter: the test process has imported the whole client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.sidecar_process import clean_environment

REPO = Path(__file__).resolve().parents[2]
IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

PINNED = """
import os, sys
from sidecar.api.client_import import import_client_lightly
assert import_client_lightly(os.environ) is None
from kubernetes.client import rest, exceptions
from kubernetes.client.configuration import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config import incluster_config
import kubernetes.client
assert kubernetes.client.Configuration is Configuration
assert rest.RESTClientObject and exceptions.ApiException and ConfigException
assert incluster_config.InClusterConfigLoader and incluster_config.SERVICE_TOKEN_FILENAME
import sidecar.app
left_out = [m for m in ("kubernetes.dynamic", "kubernetes.watch", "kubernetes.stream",
    "kubernetes.client.api_client", "kubernetes.client.api", "kubernetes.config.kube_config",
    "pydantic", "yaml", "requests", "kubernetes.client.models") if m in sys.modules]
assert not left_out, left_out
print(len(sys.modules))
"""

WHOLE = """
import os, sys
from sidecar.api.client_import import import_client_lightly
assert import_client_lightly(os.environ) is None
assert "kubernetes" not in sys.modules
import sidecar.app
assert "kubernetes.config.kube_config" in sys.modules and "kubernetes.watch" in sys.modules
print(len(sys.modules))
"""

FALLBACK = """
import os
from sidecar.api import client_import
{patch}
reason = client_import.import_client_lightly(os.environ)
import kubernetes
from kubernetes.client.models import V1Pod
assert kubernetes.watch and kubernetes.dynamic and V1Pod
print(reason)
"""


def python(code: str, environ: dict[str, str]) -> str:
    """What code prints in a fresh interpreter with this checkout first on the path."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_the_locked_client_is_laid_out_as_the_light_import_expects() -> None:
    """In a pod, for the locked kubernetes, every part the sidecar uses is the client's own
    class or module; with the whole sidecar imported, the generated APIs and ApiClient (and
    pydantic), the models, the dynamic client, kube_config and its requests and yaml stay
    unimported: far fewer modules than the whole client outside a cluster.
    """
    outside = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    parts = int(python(PINNED, IN_A_POD))
    whole = int(python(WHOLE, {**outside, "KUBERNETES_SERVICE_HOST": ""}))
    assert parts < whole - 150, (parts, whole)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ('client_import.LAID_OUT_FOR = "0."', "the light import is laid out for 0.x"),
        (
            'client_import.MODULES = ("kubernetes.client.gone",)',
            "ModuleNotFoundError: No module named 'kubernetes.client.gone'",
        ),
        (
            (
                'client_import.PACKAGES = ("kubernetes", "kubernetes.client",'
                ' "kubernetes.client.rest")'
            ),
            "kubernetes.client.rest is not a package",
        ),
    ],
    ids=["another-version", "a-module-gone", "not-a-package"],
)
def test_a_layout_it_does_not_expect_gets_the_whole_client(patch: str, reason: str) -> None:
    """Another version, a module that is gone, a package that is a module: the parts made
    are undone and the plain import gives the whole client (models, watch, dynamic); the
    reason is returned for the log.
    """
    assert reason in python(FALLBACK.format(patch=patch), IN_A_POD)


def test_the_sidecar_logs_the_fallback_as_one_json_line(tmp_path: Path) -> None:
    """When the client had to be imported whole, the sidecar says so in its JSON log, then
    goes on (here it stops at the missing service-account token, exit 2, as it would anyway).
    """
    code = (
        "from sidecar.api import client_import\n"
        'client_import.LAID_OUT_FOR = "0."\n'
        "from sidecar.__main__ import main\n"
        "raise SystemExit(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **clean_environment(),
            **IN_A_POD,
            "PYTHONPATH": str(REPO),
            "PODLISTER_SERVICE": "web",
            "PODLISTER_NAMESPACE": "default",
            "PODLISTER_OUTPUT_DIR": str(tmp_path),
            "PODLISTER_LOG_FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    fallback = next(line for line in lines if line["event"] == "client_import_fallback")
    assert "laid out for 0.x" in fallback["reason"]
    assert fallback["using"] == "import kubernetes"
