"""Images fetched by URL (remove.bg's ``image_url`` and ``bg_image_url``), when the operator
enables it (ALLOW_IMAGE_URL).

A server that fetches a URL a client names can be made to reach what only it can reach: the
cloud's metadata address, a database on the private network, its own admin port. So every hop
is checked before a byte is sent: the scheme is http or https; the host name is resolved once
and every address it has must be public (none private, loopback, link-local, shared, reserved
or multicast; IMAGE_URL_ALLOW_NETWORKS names networks an operator trusts besides); the connection
goes to the address that was checked, never to a second lookup (DNS rebinding); a redirect is a
new hop, checked the same way, three at most. The answer must be 200, within MAX_FILE_SIZE_MB
and within the time limit, counted over the whole download, not per read. Proxy variables are
not honoured: the check is of the address this process connects to.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from ..version import __version__
from ..errors import FileTooLarge, ServiceError

MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefused(ServiceError):
    """The URL is not one this server may fetch (its scheme, or where its host points)."""
    status, code = 400, "invalid_image_url"


class DownloadFailed(ServiceError):
    """The URL could be fetched in principle, but the fetch failed (no answer, not 200, too slow)."""
    status, code = 400, "failed_to_download"


def _checked_address(host: str, port: int, trusted: tuple[Network, ...]) -> str:
    """The address to connect to for ``host``: every address it resolves to must be public or in
    ``trusted``. Raises UrlRefused or DownloadFailed (no address)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DownloadFailed(f"the host {host!r} has no address") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address in network for network in trusted):
            continue
        if not address.is_global or address.is_multicast:
            raise UrlRefused(f"{host} is at {address}, a private, loopback or reserved address: "
                             "this server fetches only from public addresses")
    return found[0][4][0]


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to ``address``, whatever ``host`` would resolve to now; ``host`` is the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address``, with the certificate checked against ``host``."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.tls = ssl.create_default_context()

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _target(url: str, trusted: tuple[Network, ...], field: str) -> tuple[str, int, str, object]:
    """(host, port, checked address, connection class) for ``url``; UrlRefused or DownloadFailed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"{field} must be an http or https URL with a host, got {url[:200]!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused(f"{field} has a bad port: {url[:200]!r}") from None
    address = _checked_address(parts.hostname, port, trusted)
    return parts.hostname, port, address, _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP


def check_url(url: str, trusted: tuple[Network, ...] = (), field: str = "webhook_url") -> None:
    """Raise UrlRefused (or DownloadFailed: no address) unless ``url`` is one this server may call."""
    _target(url, trusted, field)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, trusted: tuple[Network, ...] = (),
         field: str = "webhook_url") -> int:
    """POST ``body`` to ``url``, checked as :func:`download` checks a hop (no redirect is followed);
    the answer's status. Raises UrlRefused, or DownloadFailed when there is no answer."""
    host, port, address, kind = _target(url, trusted, field)
    parts = urlsplit(url)
    connection = kind(host, port, address, timeout=timeout)
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers={"User-Agent": f"bg-removal/{__version__}", **headers})
        response = connection.getresponse()
        response.read1(1 << 16)  # what has arrived: a receiver trickling its answer cannot hold the worker
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadFailed(f"{field}: no answer ({exc.__class__.__name__}: {exc})"[:300]) from None
    finally:
        connection.close()


def download(url: str, limit: int, timeout: float, trusted: tuple[Network, ...] = (), field: str = "image_url"
             ) -> bytes:
    """The body of a GET of ``url``: at most ``limit`` bytes (FileTooLarge beyond), within
    ``timeout`` seconds in all, following up to MAX_REDIRECTS redirects, every hop checked as the
    module says. Raises UrlRefused, DownloadFailed or FileTooLarge, each naming ``field``."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        if time.monotonic() > deadline:
            raise DownloadFailed(f"{field}: the download took longer than {timeout:.0f} s")
        parts = urlsplit(url)
        host, port, address, kind = _target(url, trusted, field)
        connection = kind(host, port, address, timeout=max(0.1, deadline - time.monotonic()))
        try:
            connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                               headers={"User-Agent": f"bg-removal/{__version__}", "Accept": "image/*"})
            sock = connection.sock  # the response reads from it; getresponse() may drop the connection's hold
            response = connection.getresponse()
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise DownloadFailed(f"{field}: the server answered {response.status} {response.reason}")
            declared = response.getheader("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise FileTooLarge(f"{field}: the image is larger than {limit // 2**20} MB")
            body = bytearray()
            while True:
                # read1: what has arrived, not a full buffer (read(n) waits for n bytes, so a server
                # trickling a byte a second held the download past its deadline); each wait for
                # data is bounded by the time left
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DownloadFailed(f"{field}: the download took longer than {timeout:.0f} s")
                sock.settimeout(left)
                chunk = response.read1(min(1 << 16, limit + 1 - len(body)))
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limit:
                    raise FileTooLarge(f"{field}: the image is larger than {limit // 2**20} MB")
        except TimeoutError:
            raise DownloadFailed(f"{field}: the download took longer than {timeout:.0f} s") from None
        except (OSError, http.client.HTTPException) as exc:  # ssl errors are OSErrors
            raise DownloadFailed(f"{field}: the download failed ({exc.__class__.__name__}: {exc})"[:300]) from None
        finally:
            connection.close()
    raise DownloadFailed(f"{field}: more than {MAX_REDIRECTS} redirects")
