"""The client imported in part (sidecar/kube_import.py): its layout pinned for the locked
version, and the plain import, logged, whenever that layout is not what it expects.

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

REPO = Path(__file__).resolve().parent.parent

PINNED = """
import sys
from sidecar.kube_import import import_client_lightly
assert import_client_lightly() is None
from kubernetes import client, config
from kubernetes.client import rest, exceptions
from kubernetes.client.configuration import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config import incluster_config
assert client.Configuration is Configuration and config.ConfigException is ConfigException
assert rest.RESTClientObject and exceptions.ApiException.from_response
assert incluster_config.InClusterConfigLoader and incluster_config.SERVICE_TOKEN_FILENAME
import sidecar.app
left_out = [m for m in ("kubernetes.dynamic", "kubernetes.watch", "kubernetes.stream",
    "kubernetes.client.api_client", "kubernetes.client.api", "kubernetes.config.kube_config",
    "pydantic", "yaml", "requests_oauthlib", "kubernetes.client.models.v1_pod") if m in sys.modules]
assert not left_out, left_out
parts = len(sys.modules)
load = config.load_kube_config  # as sidecar/kube.py reaches it
from kubernetes.config.kube_config import load_kube_config
assert load is load_kube_config
assert "kubernetes.client.api_client" not in sys.modules and "pydantic" not in sys.modules
made = client.ApiClient(configuration=Configuration())
from kubernetes.client.api_client import ApiClient
assert type(made) is ApiClient and made.configuration.host == Configuration().host
assert "requests_oauthlib" not in sys.modules and "requests" not in sys.modules
from kubernetes.config import kube_config
session = kube_config.OAuth2Session(client_id="podlister")
from requests_oauthlib import OAuth2Session
assert type(session) is OAuth2Session and session.client_id == "podlister"
print(parts)
"""

ALREADY_IMPORTED = """
import requests_oauthlib
from sidecar.kube_import import import_client_lightly
assert import_client_lightly() is None
from kubernetes import config
assert config.load_kube_config
assert config.kube_config.OAuth2Session is requests_oauthlib.OAuth2Session
print("real")
"""

WHOLE = """
import sys
import kubernetes
print(len(sys.modules))
"""

FALLBACK = """
import sys
from sidecar import kube_import
{patch}
reason = kube_import.import_client_lightly()
import kubernetes
from kubernetes.client.models import V1Pod
assert kubernetes.watch and kubernetes.dynamic and V1Pod
print(reason)
"""


def python(code: str) -> str:
    """What code prints in a fresh interpreter with this checkout first on the path."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_the_locked_client_is_laid_out_as_the_light_import_expects() -> None:
    """For the locked kubernetes (37.0.2) every part the sidecar uses is the client's own
    class or module; with the whole sidecar imported, the generated APIs and ApiClient (and
    pydantic), the models, the dynamic client, kube_config and its requests/oauthlib/yaml
    stay unimported until asked for, and then are the real ones (ApiClient and
    requests_oauthlib's OAuth2Session, which kube_config binds, only when called, and no
    stand-in left in sys.modules); fewer modules than the plain import.
    """
    parts = int(python(PINNED))
    whole = int(python(WHOLE))
    assert parts < whole - 150, (parts, whole)


def test_kube_config_takes_a_requests_oauthlib_already_imported_as_it_is() -> None:
    """When something imported requests_oauthlib before kube_config, kube_config binds the
    real OAuth2Session, not a stand-in.
    """
    assert python(ALREADY_IMPORTED) == "real"


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ('kube_import.LAID_OUT_FOR = "0.0.1"', "the light import is laid out for 0.0.1"),
        (
            'kube_import.EXPORTS = {"kubernetes.client": {"X": ("kubernetes.client.gone", "X")}}',
            "ModuleNotFoundError: No module named 'kubernetes.client.gone'",
        ),
        (
            'kube_import.PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.client.rest")',
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
    assert reason in python(FALLBACK.format(patch=patch))


def test_the_sidecar_logs_the_fallback_as_one_json_line(tmp_path: Path) -> None:
    """When the client had to be imported whole, the sidecar says so in its JSON log, then
    goes on (here it stops at the missing kubeconfig, exit 2, as it would anyway).
    """
    code = (
        "from sidecar import kube_import, cli\n"
        'kube_import.LAID_OUT_FOR = "0.0.1"\n'
        "raise SystemExit(cli.main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **clean_environment(),
            "PYTHONPATH": str(REPO),
            "PODLISTER_SERVICE": "web",
            "PODLISTER_OUTPUT_DIR": str(tmp_path),
            "PODLISTER_LOG_FORMAT": "json",
            "KUBECONFIG": str(tmp_path / "missing"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    fallback = next(line for line in lines if line["event"] == "client_import_fallback")
    assert "laid out for 0.0.1" in fallback["reason"]
    assert fallback["using"] == "import kubernetes"
