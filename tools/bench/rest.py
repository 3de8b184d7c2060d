"""REST load: wrk (Debian's package) from its own process, one operation at a time, ours and the ceiling in turn.

Each request picks the next seeded user round-robin (its token and sub-account), so deposits do not all queue on
one row lock. A run reports req/s, p50/p99 latency and the responses that were not 2xx.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

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


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("no wrk: `make bench` installs it (apt-get install -y wrk) when run as root")
    return found


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


def run_wrk(url: str, script: Path, seconds: float, connections: int, threads: int = 2) -> dict:
    out = subprocess.run([wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(re.search(r"50%\s+(\S+)", out).group(1)),
            "p99_ms": _ms(re.search(r"99%\s+(\S+)", out).group(1)),
            "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def merge(runs: list[dict]) -> dict:
    """Several alternating rounds of one target: summed counts, the median round's rate and latencies."""
    runs = sorted(runs, key=lambda r: r["rps"])
    middle = runs[len(runs) // 2]
    return {**middle, "requests": sum(r["requests"] for r in runs), "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs), "rounds": len(runs)}
