"""Outbound HTTP for user-supplied URLs (webhooks, init images) with an SSRF guard and caps.

Every hop is resolved first and refused unless *all* its addresses are public; the connection
then goes to the checked IP itself (Host header and TLS SNI keep the name), so DNS rebinding
cannot swap the address between check and connect. Redirects are followed by hand, one checked
hop at a time. Numeric host forms (2130706433, 0x7f000001, 0177.0.0.1, ::ffff:127.0.0.1) are
whatever the resolver makes of them, and that address is what gets checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from shared.errors import BadImage, UrlRefused

NAT64 = ipaddress.ip_network("64:ff9b::/96")
REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class Guard:
    """What outbound requests may reach, and how much they may take."""

    allow_private: bool = False
    allowlist: frozenset[str] = field(default_factory=frozenset)  # "ip:port" exemptions
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 20.0
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings) -> Guard:
        return cls(settings.allow_private_urls, frozenset(settings.private_host_allowlist()),
                   settings.fetch_max_bytes, settings.fetch_timeout_seconds,
                   settings.fetch_max_redirects)


@dataclass(frozen=True)
class Target:
    """One checked hop: where to connect, and the name the server expects."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked IP."""
        parts = urlsplit(self.url)
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return urlunsplit((parts.scheme, f"{host}:{self.port}", parts.path or "/", parts.query,
                           ""))

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address, including any IPv4 address embedded in an IPv6 one."""
    if ip.version == 6:
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(e is not None and not is_public(e) for e in embedded):
            return False
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, guard: Guard, field_name: str = "url") -> Target:
    """Parse and resolve a URL, refusing it unless every address it resolves to is allowed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError) as e:
        raise UrlRefused(f"{field_name}: not a valid URL", param=field_name) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"{field_name}: only http and https URLs are allowed", param=field_name)
    if parts.username or parts.password:
        raise UrlRefused(f"{field_name}: URLs with credentials are not allowed", param=field_name)
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port,
                                                             type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UrlRefused(f"{field_name}: cannot resolve host {parts.hostname!r}",
                         param=field_name) from e
    ips = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        ips.append(ip)
        where = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        if not (guard.allow_private or is_public(ip) or where in guard.allowlist):
            raise UrlRefused(f"{field_name}: {parts.hostname} resolves to {ip}, which is not a "
                             "public address", param=field_name)
    if not ips:
        raise UrlRefused(f"{field_name}: cannot resolve host {parts.hostname!r}", param=field_name)
    return Target(url.strip(), parts.scheme, parts.hostname, port, str(ips[0]))


def _client(timeout: float) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment would connect somewhere unchecked.
    return httpx.AsyncClient(trust_env=False, follow_redirects=False,
                             timeout=httpx.Timeout(timeout))


def _request(client: httpx.AsyncClient, method: str, target: Target, **kw) -> httpx.Request:
    headers = {"host": target.host_header(), **kw.pop("headers", {})}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.build_request(method, target.pinned_url(), headers=headers,
                                extensions=extensions, **kw)


async def fetch(url: str, guard: Guard, field_name: str = "url") -> bytes:
    """GET a URL's body, each redirect hop checked, at most guard.max_bytes within guard.timeout."""
    deadline = time.monotonic() + guard.timeout
    try:
        async with asyncio.timeout(guard.timeout), _client(guard.timeout) as client:
            for _ in range(guard.max_redirects + 1):
                target = await check_url(url, guard, field_name)
                resp = await client.send(_request(client, "GET", target), stream=True)
                try:
                    if resp.status_code in REDIRECTS and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise BadImage(f"{field_name}: download answered HTTP {resp.status_code}",
                                       param=field_name)
                    return await _read_capped(resp, guard.max_bytes, field_name, deadline)
                finally:
                    await resp.aclose()
            raise BadImage(f"{field_name}: more than {guard.max_redirects} redirects",
                           param=field_name)
    except TimeoutError as e:
        raise BadImage(f"{field_name}: download took longer than {guard.timeout:g} s",
                       param=field_name) from e
    except httpx.HTTPError as e:
        raise BadImage(f"{field_name}: download failed ({type(e).__name__})",
                       param=field_name) from e


async def _read_capped(resp: httpx.Response, limit: int, field_name: str,
                       deadline: float) -> bytes:
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadImage(f"{field_name}: {declared} bytes is over the {limit} byte limit",
                       param=field_name)
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BadImage(f"{field_name}: over the {limit} byte limit", param=field_name)
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)


async def post(url: str, body: bytes, headers: dict[str, str], guard: Guard,
               timeout: float, field_name: str = "webhook") -> int:
    """POST once to a checked URL without following redirects; returns the HTTP status."""
    target = await check_url(url, guard, field_name)
    async with asyncio.timeout(timeout), _client(timeout) as client:
        resp = await client.send(_request(client, "POST", target, content=body, headers=headers))
        await resp.aclose()
        return resp.status_code
