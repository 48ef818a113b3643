"""Which URLs a client may hand to Seedance through us: HTTPS on a public host, nothing else.

Seedance fetches the images and references we forward, so a URL naming a private,
loopback, link-local or metadata address would let a client make requests "from us".
The check is purely syntactic (no DNS lookup): hosts must be IP literals that are
globally routable, or DNS names with an alphabetic top-level label outside the
special-use domains. Numeric host tricks (`2130706433`, `0x7f.1`, `127.1`) therefore
fail as not-a-name. Where we fetch a URL ourselves, `resolve_publicly` adds the DNS
check: a public-looking name must not resolve to a private address.
"""

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from pydantic_core import PydanticCustomError

MAX_URL_LENGTH = 2048
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
# RFC 6761 / 6762 / 8375 special-use names and common internal suffixes
_PRIVATE_SUFFIXES = (
    "localhost",
    "local",
    "internal",
    "intranet",
    "lan",
    "home",
    "corp",
    "home.arpa",
    "test",
    "invalid",
    "example",
    "onion",
    "localdomain",
)


# The syntax every accepted URL has, as a pattern (the OpenAPI document states it, the
# check enforces it last): https, a DNS name with an alphabetic top-level label or an IP
# address, a port from 1 to 65535, no user info, and only the characters RFC 3986 allows
# unencoded. Which names and addresses are public is for the check (`url_host_not_public`).
_LABEL_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET_PATTERN = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4_PATTERN = rf"(?:{_OCTET_PATTERN}\.){{3}}{_OCTET_PATTERN}"
_H16, _LS32 = "[0-9A-Fa-f]{1,4}", rf"(?:[0-9A-Fa-f]{{1,4}}:[0-9A-Fa-f]{{1,4}}|{_IPV4_PATTERN})"
_IPV6_PATTERN = "|".join(  # RFC 3986's IPv6address, form by form
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        *(rf"(?:(?:{_H16}:){{0,{n - 1}}}{_H16})?::(?:{_H16}:){{{3 - n}}}{_LS32}" for n in (2, 3)),
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
_HOST_PATTERN = (
    rf"(?:(?:{_LABEL_PATTERN}\.)+(?:[A-Za-z]{{2,63}}|[Xx][Nn]--[A-Za-z0-9-]{{0,58}}[A-Za-z0-9])\.?"
    rf"|{_IPV4_PATTERN}|\[(?:{_IPV6_PATTERN})\])"
)
_PORT_PATTERN = (  # 1 to 65535
    r"[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
)
_URL_CHAR_PATTERN = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})"
URL_TAIL_PATTERN = (  # port, path and query, fragment
    rf"(?::(?:{_PORT_PATTERN}))?(?:[/?]{_URL_CHAR_PATTERN}*)?(?:#{_URL_CHAR_PATTERN}*)?"
)
_HOST_LENGTH_PATTERN = r"(?=[^/?#:]{1,253}\.?(?:[/?#:]|$))"  # a name of at most 253 characters
PUBLIC_HTTPS_URL_PATTERN = rf"^https://{_HOST_LENGTH_PATTERN}{_HOST_PATTERN}{URL_TAIL_PATTERN}$"
_WELL_FORMED = re.compile(PUBLIC_HTTPS_URL_PATTERN)


def _reject(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


# IPv6 forms that carry an IPv4 address, which is where a connection to them goes
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: 64:ff9b::a00:1 is 10.0.0.1
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated (RFC 4291): ::7f00:1
# not globally routable, though Python's is_global (3.11) says they are
_NOT_GLOBAL: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments (192.0.0.8, ...)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215: local-use NAT64
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879)
    ipaddress.IPv6Network("2001::/32"),  # Teredo: the client's address hides behind it
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour  # 2002:7f00:1:: is 127.0.0.1, through a 6to4 relay


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The one judgement of an address we would connect to (a URL's host, a resolved name,
    a redirect's target): globally routable and not multicast; an IPv6 address that
    carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the IPv4 address,
    which is where the connection ends up."""
    if isinstance(address, ipaddress.IPv6Address):
        if (embedded := _embedded_ipv4(address)) is not None:
            return is_public_address(embedded)
    if any(address in network for network in _NOT_GLOBAL):  # another family's: False
        return False
    return address.is_global and not address.is_multicast


def _check_ip_host(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise _reject("invalid_url", "the URL's host is not a valid address") from exc
    if not is_public_address(address):
        raise _reject("url_host_not_public", "the URL must point to a public host")


def _check_dns_host(host: str) -> None:
    if not host.isascii():
        raise _reject("invalid_url", "the URL's host must be ASCII (use the punycode xn-- form)")
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _reject("invalid_url", "the URL's host is not a valid name")
    if len(labels) < 2 or not _TLD.match(labels[-1]):
        # single-label hosts and numeric forms such as 2130706433, 0x7f.1 or 127.1
        raise _reject("url_host_not_public", "the URL must point to a public host")
    if any(name == s or name.endswith("." + s) for s in _PRIVATE_SUFFIXES):
        raise _reject("url_host_not_public", "the URL must point to a public host")


def check_public_https_url(url: str) -> str:
    """Return `url` if it is safe to forward, else raise a PydanticCustomError with our code."""
    if len(url) > MAX_URL_LENGTH:
        raise _reject("too_long", f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise _reject("invalid_url", "the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise _reject("invalid_url", "the URL is malformed") from exc
    if parts.scheme != "https" or not url.startswith("https://"):
        raise _reject("url_not_https", "only https:// URLs are accepted")
    if "@" in parts.netloc:
        raise _reject("url_has_credentials", "URLs must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise _reject("invalid_url", "the URL has no host")
    if port == 0:
        raise _reject("invalid_url", "the URL's port is invalid")
    if parts.netloc.startswith("[") or re.fullmatch(r"[0-9.]+", host):
        _check_ip_host(host)
    else:
        _check_dns_host(host)
    if not _WELL_FORMED.fullmatch(url):
        raise _reject("invalid_url", "the URL has characters that RFC 3986 wants percent-encoded")
    return url


class HostNotPublic(Exception):
    """A host name that resolves to a loopback, private, link-local or metadata address."""


async def resolve_publicly(host: str, port: int) -> None:
    """Raise HostNotPublic unless every address `host` resolves to is globally routable
    (OSError when it does not resolve). Called before each request we make to such a URL."""
    addresses = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in addresses:
        if not is_public_address(ipaddress.ip_address(sockaddr[0])):
            raise HostNotPublic(f"{host} resolves to a non-public address")
