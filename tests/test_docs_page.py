"""The API documentation page (Swagger UI at /v1/ui/) renders every operation in a real browser, offline.

Debian's `chromium` opens the page served by `tiris serve` and dumps the DOM once Swagger UI has fetched the spec
and rendered it. Chromium's network log lists every URL the page asked for: all of them must be the service's own,
so the page works where the service has no internet access.
"""

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.server import live_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
RENDER_BUDGET_MS = 20000  # virtual time: Chromium fast-forwards timers, so this is an upper bound, not a wait
CHROMIUM_TIMEOUT = 120


def _unavailable(reason: str):
    """Skips where a browser cannot be had; CI must run this test, so there it fails instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs Chromium for the docs page test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed here when missing and we may (root, apt-get present)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _unavailable(f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)")
    started = time.monotonic()
    # The lock timeout lets a parallel run's install finish first instead of failing on dpkg's lock.
    apt = "apt-get -q -o DPkg::Lock::Timeout=600"
    result = subprocess.run(f"{apt} update && {apt} install -y --no-install-recommends chromium", shell=True,
                            capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0 or not os.path.exists(CHROMIUM):
        _unavailable(f"installing chromium failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    print(f"installed chromium in {time.monotonic() - started:.0f} s")
    return CHROMIUM


def _render(chromium: str, url: str, work: Path) -> tuple[str, list[str]]:
    """The page's DOM after rendering, and every URL the page itself requested while loading.

    The browser's own background traffic (update checks, network time) has no page as its initiator and is left
    out: it is not something the page needs.
    """
    net_log = work / "netlog.json"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={work / 'profile'}", f"--log-net-log={net_log}",
         f"--virtual-time-budget={RENDER_BUDGET_MS}", "--dump-dom", url],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT)
    assert result.returncode == 0, result.stderr[-4000:]
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = []
    for event in log["events"]:
        params = event.get("params", {})
        if event["type"] == start_job and "url" in params and (params.get("request_type") == "main frame"
                                           or params.get("initiator") != "not an origin"):
            requested.append(params["url"])
    return result.stdout, requested


def _documented_operations() -> set[tuple[str, str, str, str]]:
    """(METHOD, path, summary, operationId) of every operation in openapi.yaml."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return {(method.upper(), path, operation["summary"], operation["operationId"])
            for path, item in spec["paths"].items() for method, operation in item.items()
            if isinstance(operation, dict) and "operationId" in operation}


def _rendered_operations(dom: str) -> set[tuple[str, str, str, str]]:
    """The same four things, read from each operation block Swagger UI rendered."""
    found = set()
    for block in dom.split('<div class="opblock-summary opblock-summary-')[1:]:
        def text(css_class: str, attribute: str = "") -> str:
            match = re.search(rf'class="{css_class}"{attribute}[^>]*>([^<]*)<', block)
            return html.unescape(match.group(1)) if match else "(missing)"
        path = re.search(r'class="opblock-summary-path" data-path="([^"]+)"', block)
        found.add((text("opblock-summary-method"), html.unescape(path.group(1)) if path else "(missing)",
                   text("opblock-summary-description"), text("opblock-summary-operation-id")))
    return found


def test_docs_page_renders_every_operation_in_chromium_without_internet(chromium, live_server,  # noqa: F811
                                                                         tmp_path):
    dom, requested = _render(chromium, f"{live_server.url}/v1/ui/", tmp_path)
    (tmp_path / "dom.html").write_text(dom)  # kept for reading when the test fails

    assert _rendered_operations(dom) == _documented_operations()
    assert f"{live_server.url}/v1/openapi.json" in requested, requested
    assert f"{live_server.url}/v1/ui/swagger-ui-bundle.js" in requested, requested
    assert [url for url in requested if not url.startswith(live_server.url + "/")] == []
