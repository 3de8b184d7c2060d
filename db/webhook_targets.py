"""Where a webhook may point: the rules that keep the service from being aimed at internal hosts.

WEBHOOK_ALLOWED_HOSTS is a list of entries:
- `*`: any host, over HTTPS, whose addresses are all public;
- `*.example.com`: hosts under example.com, over HTTPS, whose addresses are all public;
- `hooks.example.com`, `10.0.0.7`, `::1`: that very host (a name or an address), over HTTP or HTTPS, whatever its
  addresses: how a deployment allows an internal receiver on purpose.

A target is checked twice: when the webhook is created or changed (`check_url`, and `check_addresses` on what its
name resolves to then), and before every attempt, on the addresses the deliverer resolved and then connects to
(so a name that re-resolves to an internal address later, DNS rebinding, is refused at that point).
"""

import concurrent.futures
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from db.errors import Refused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT = 3.0  # seconds a check at creation waits for DNS; an unanswered name is checked at delivery


class TargetRefused(Refused):
    code = "WEBHOOK_TARGET_REFUSED"
    message = "This webhook URL is not an allowed target."


@dataclass(frozen=True)
class Allowed:
    exact: frozenset[str]  # hosts listed by name or address
    suffixes: tuple[str, ...]  # "*.example.com" as ".example.com"
    any_public: bool  # "*"

    @classmethod
    def parse(cls, entries) -> "Allowed":
        entries = [entry.strip().lower() for entry in entries if entry.strip()]
        return cls(exact=frozenset(_host(entry) for entry in entries if not entry.startswith("*")),
                   suffixes=tuple(entry[1:] for entry in entries if entry.startswith("*.")),
                   any_public="*" in entries)


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower case, ASCII (IDNA), an IPv6 address without brackets
    port: int
    listed: bool  # listed by itself in WEBHOOK_ALLOWED_HOSTS: any address, plain HTTP allowed


def valid_entry(entry: str) -> bool:
    if entry == "*":
        return True
    name = entry[2:] if entry.startswith("*.") else entry
    return _address(_host(name)) is not None or _is_host_name(name)


def _host(text: str) -> str:
    return text.strip("[]").rstrip(".").lower()


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels)


def _address(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def public(address: Address) -> bool:
    """Routable on the internet: not loopback, private, link-local, shared (CGNAT), reserved, multicast or
    unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _refuse(host: str, reason: str) -> TargetRefused:
    return TargetRefused(details={"host": host, "reason": reason})


def check_url(url: str, allowed: Allowed) -> Target:
    """The URL's target, if WEBHOOK_ALLOWED_HOSTS allows it (by name and, for an address, by address)."""
    try:
        parts = urlsplit(url)
        raw_host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise _refuse("", "the port must be 1..65535") from None
    if port == 0:
        raise _refuse(raw_host, "the port must be 1..65535")
    if parts.scheme not in ("http", "https"):
        raise _refuse(raw_host, "the URL must be https://")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise _refuse(raw_host, "the URL may not carry user information or a fragment")
    try:
        host = _host(raw_host).encode("idna").decode("ascii") if raw_host else ""
    except UnicodeError:
        raise _refuse(raw_host, "not a valid host name") from None
    address = _address(host)
    if not host or (address is None and not _is_host_name(host)):
        raise _refuse(raw_host, "not a valid host name")
    target = Target(url=url, scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80),
                    listed=host in allowed.exact)
    if target.listed:
        return target
    if parts.scheme != "https":
        raise _refuse(host, "the URL must be https:// (plain http only for hosts listed in WEBHOOK_ALLOWED_HOSTS)")
    if not (allowed.any_public or any(host.endswith(suffix) for suffix in allowed.suffixes)):
        raise _refuse(host, "the host is not in WEBHOOK_ALLOWED_HOSTS")
    if address is not None and not public(address):
        raise _refuse(host, f"{address} is not a public address")
    return target


def check_addresses(target: Target, addresses: list[Address]) -> None:
    """Every address the target's host resolved to must be public, unless the host is listed by itself."""
    if target.listed:
        return
    if not addresses:
        raise _refuse(target.host, "the host has no address")
    for address in addresses:
        if not public(address):
            raise _refuse(target.host, f"{target.host} resolves to {address}, which is not a public address")


def resolve(host: str, port: int) -> list[Address]:
    """The host's addresses (an address is its own); socket.gaierror when the name does not resolve."""
    address = _address(host)
    if address is not None:
        return [address]
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(a for a in (_address(info[4][0]) for info in found) if a is not None))


_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def check_target(url: str, allowed: Allowed) -> Target:
    """The check at creation: the URL, then the addresses its name has now. A name that does not resolve (yet) or
    answers too slowly is accepted: every delivery resolves and checks again before it connects."""
    target = check_url(url, allowed)
    if target.listed or _address(target.host) is not None:
        return target
    try:
        addresses = _resolver.submit(resolve, target.host, target.port).result(timeout=RESOLVE_TIMEOUT)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return target
    check_addresses(target, addresses)
    return target
