"""The commands README.md and docs/ give in their ``sh`` blocks, and the test that runs each.

tests/unit/test_readme.py holds the pages and this table equal: a command a page gives that no
test runs fails there, as does a test named here that does not exist. The tests take the
commands from here, so the text they run is the text a reader copies. Where a command holds a
placeholder (REGISTRY, DIGEST, EXTERNAL-IP) the test puts its own in.
"""

from __future__ import annotations

import re
from pathlib import Path

TRY_IT = (
    "apt-get update && apt-get install -y nginx-light python3-venv && python3 -m venv .venv"
    " && .venv/bin/pip install 'tox>=4.11,<5' && .venv/bin/tox -e demo"
)
TEST_IT = "bash .ci/run"
UNIT = ".venv/bin/tox -e unit"
LOCK = ".venv/bin/tox -e lock"
DEMO_KEEP = ".venv/bin/tox -e demo -- --keep"
DEMO_CONTROLPLANE = ".venv/bin/tox -e demo-controlplane -- --keep"
CLUSTER = ".venv/bin/tox -e cluster -- --keep"
KEY_PAIR = "tox -e cosign -- generate-key-pair"
RELEASE = "tox -e release -- REGISTRY/podlister-sidecar --key cosign.key"
APPLY_DO = "kubectl apply -k kustomize/overlays/do"
GET_SVC = "kubectl -n podlister get svc podlister"
CURL = "curl http://EXTERNAL-IP/"
MINE = "cp -r kustomize/overlays/example kustomize/overlays/mine"
MONITORING = (
    "sed -i 's|# - ../../components/monitoring|- ../../components/monitoring|'"
    " kustomize/overlays/mine/kustomization.yaml"
)
BASE_IMAGE = "tox -e base-image"
# Given inline (README, "Deploy"), not in a block: run by test_node's NetworkPolicy test.
LABEL_FOR_METRICS = "kubectl label namespace monitoring podlister/metrics=scrape"
REPRODUCE = ".venv/bin/tox -e reproduce -- --base localhost/podlister-python:bookworm"
VERIFY = (
    "cosign verify --key build/release/podlister-sidecar-0.1.0.pub --insecure-ignore-tlog=true"
    " REGISTRY/podlister-sidecar@DIGEST"
)
VERIFY_ATTESTATION = (
    "cosign verify-attestation --key build/release/podlister-sidecar-0.1.0.pub"
    " --insecure-ignore-tlog=true --type cyclonedx REGISTRY/podlister-sidecar@DIGEST"
)

# Each command, and the test that runs it: its file under tests/ and its function ("" for
# bash .ci/run, which CI runs exactly so on every landing).
RELEASE_TEST = (
    "system/test_release.py",
    "test_release_pins_signs_and_attests_the_digest_the_registry_serves",
)
DO_TEST = ("system/test_node.py", "test_do_overlay_gets_a_load_balancer_ip_and_the_hpa_reads_cpu")
MONITORING_TEST = (
    "integration/test_monitoring.py",
    "test_monitoring_turns_on_with_the_readmes_line",
)
RUN_BY: dict[str, tuple[str, str]] = {
    TRY_IT: ("system/test_demo.py", "test_try_it_on_a_fresh_clone"),
    TEST_IT: ("", ""),
    UNIT: ("system/test_demo.py", "test_the_everyday_loop_runs_the_unit_tier"),
    LOCK: ("integration/test_locks.py", "test_the_locks_are_what_the_lock_command_makes"),
    DEMO_KEEP: ("system/test_demo.py", "test_ctrl_c_stops_everything"),
    DEMO_CONTROLPLANE: ("system/test_demo.py", "test_controlplane_demo_stops_on_sigterm"),
    CLUSTER: ("system/test_node.py", "test_tox_e_cluster_keeps_the_cluster_until_sigterm"),
    KEY_PAIR: RELEASE_TEST,
    RELEASE: RELEASE_TEST,
    VERIFY: RELEASE_TEST,
    VERIFY_ATTESTATION: RELEASE_TEST,
    REPRODUCE: ("system/test_release.py", "test_two_builds_of_one_commit_are_one_image"),
    BASE_IMAGE: ("system/test_image.py", "test_base_image_command_names_the_base"),
    APPLY_DO: DO_TEST,
    GET_SVC: DO_TEST,
    CURL: DO_TEST,
    MINE: MONITORING_TEST,
    MONITORING: MONITORING_TEST,
}


def metric_names() -> list[str]:
    """The sidecar's metrics as the README's Settings section names them (its **Metrics**)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("**Metrics**", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"`(podlister_[a-z_]+)", paragraph)
