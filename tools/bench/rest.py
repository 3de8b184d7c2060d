"""REST load: wrk (Debian's package) from its own process, one operation at a time, ours and the ceiling in turn.

Without wrk (a machine where `make bench` could not install it) a small Python load generator in its own process
stands in: good enough to prove the tooling end to end, too slow on its own side to measure a ceiling.

Each request picks the next seeded user round-robin (its token and sub-account), so deposits do not all queue on
one row lock. A run reports req/s, p50/p99 latency and the responses that were not 2xx.
"""

import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

OPERATIONS = {  # name -> (method, path template, body)
    "GET /v1/sub-accounts/{id}": ("GET", "/v1/sub-accounts/{id}", None),
    "GET /v1/transactions (100)": ("GET", "/v1/transactions?limit=100", None),
    "POST /v1/sub-accounts/{id}/deposit": ("POST", "/v1/sub-accounts/{id}/deposit", {"amount": "1.5"}),
}

_SCRIPT = """
local users = %(users)s
local method, template, body = "%(method)s", "%(path)s", %(body)s
local n = 0
request = function()
  n = n + 1
  local u = users[(n %% #users) + 1]
  local headers = {["Authorization"] = "Bearer " .. u[1], ["Content-Type"] = "application/json"}
  return wrk.format(method, (template:gsub("{id}", u[2])), headers, body)
end
"""


def loader() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def write_script(directory: Path, operation: str, users: list[tuple[str, str]]) -> Path:
    method, path, body = OPERATIONS[operation]
    lua_users = "{" + ",".join(f'{{"{token}","{account}"}}' for token, account in users) + "}"
    lua_body = "nil" if body is None else "[[" + json.dumps(body) + "]]"
    script = directory / (re.sub(r"\W+", "_", operation).strip("_") + ".lua")
    script.write_text(_SCRIPT % {"users": lua_users, "method": method, "path": path, "body": lua_body})
    return script


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_load(url: str, script: Path, seconds: float, connections: int, users, operation: str) -> dict:
    if loader() == "wrk":
        return run_wrk(url, script, seconds, connections)
    spec = json.dumps({"url": url, "seconds": seconds, "connections": connections, "users": users,
                       "operation": list(OPERATIONS[operation])})
    out = subprocess.run([sys.executable, "-m", "tools.bench.rest"], input=spec, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    return json.loads(out)


def run_wrk(url: str, script: Path, seconds: float, connections: int, threads: int = 2) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def merge(runs: list[dict]) -> dict:
    """Several alternating rounds of one target: summed counts, the median round's rate and latencies."""
    runs = sorted(runs, key=lambda r: r["rps"])
    middle = runs[len(runs) // 2]
    return {**middle, "requests": sum(r["requests"] for r in runs), "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs), "rounds": len(runs)}


def _python_load(spec: dict) -> dict:
    """Keep-alive connections in threads, each looping over the users; the same figures as run_wrk."""
    target, (method, template, body) = urlparse(spec["url"]), spec["operation"]
    payload = json.dumps(body).encode() if body is not None else None
    latencies, failures, stop = [], [0], time.monotonic() + spec["seconds"]

    def client(offset: int) -> None:
        conn, n = http.client.HTTPConnection(target.hostname, target.port, timeout=30), offset
        while time.monotonic() < stop:
            token, account = spec["users"][n % len(spec["users"])]
            n += 1
            started = time.perf_counter()
            try:
                conn.request(method, template.replace("{id}", account), body=payload,
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    failures[0] += 1
            except (OSError, http.client.HTTPException):
                failures[0] += 1
                conn.close()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(spec["connections"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    count = len(latencies)
    return {"rps": count / (time.monotonic() - started), "p50_ms": latencies[count // 2] if count else 0.0,
            "p99_ms": latencies[min(count - 1, int(count * 0.99))] if count else 0.0, "requests": count,
            "non_2xx": failures[0], "socket_errors": 0}


if __name__ == "__main__":
    print(json.dumps(_python_load(json.loads(sys.stdin.read()))))
