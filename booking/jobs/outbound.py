"""Where webhook messages may go: public addresses only, checked when a webhook is
registered and again for every delivery, at the address actually connected to.

A host name is resolved, every address it resolves to is checked, and the request goes to
the first checked address with the name in Host and in TLS (SNI and the certificate check):
a name that resolved to a public address at registration and to 127.0.0.1 later (DNS
rebinding) is refused, not connected to. WEBHOOK_ALLOW_PRIVATE=1 turns the checks off.
"""

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be sent to; the message says why, fit for a client and a log."""


def _forbidden(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global  # 100.64.0.0/10 (shared address space) and the like
    )


def _port(url: str) -> tuple[str, int]:
    """The host and port of an absolute http(s) URL, or Refused."""
    try:
        parts = urlsplit(url)
    except ValueError:  # what is in brackets is no IPv6 address
        raise Refused("The host in brackets must be an IPv6 address.") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise Refused("Must be an absolute http:// or https:// URL.")
    try:
        port = parts.port
    except ValueError:
        raise Refused("The port must be a number from 0 to 65535.") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def public_addresses(host: str, port: int) -> list[Address]:
    """Every address the host is or resolves to, all public; Refused otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):  # no such name; a NUL in it
        raise Refused(f"The host {host} does not resolve.") from None
    addresses = [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]
    for address in addresses:
        if _forbidden(address):
            raise Refused(
                f"The host {host} is or resolves to {address}, a loopback, private,"
                " link-local, multicast or reserved address."
            )
    return addresses


def check_url(url: str, allow_private: bool) -> None:
    """Refused for a URL a webhook may not have."""
    host, port = _port(url)
    if not allow_private:
        public_addresses(host, port)


def post(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], allow_private: bool
) -> int:
    """POST the body and return the status; the answer's body is not read. Refused, or
    httpx.HTTPError when no answer came."""
    host, port = _port(url)
    if allow_private:
        with client.stream("POST", url, content=body, headers=headers) as answer:
            return answer.status_code
    return post_to(client, url, public_addresses(host, port)[0], body, headers)


def post_to(
    client: httpx.Client, url: str, address: Address, body: bytes, headers: dict[str, str]
) -> int:
    """POST to this address, whatever the URL's host resolves to, with that host in Host
    and in TLS: SNI, and the certificate checked against the name, not the address."""
    host, port = _port(url)
    parts = urlsplit(url)
    shown = f"[{address}]" if address.version == 6 else str(address)
    headers = {**headers, "Host": parts.netloc.rpartition("@")[2]}
    extensions = {"sni_hostname": host}
    url = urlunsplit(parts._replace(netloc=f"{shown}:{port}"))
    with client.stream("POST", url, content=body, headers=headers, extensions=extensions) as answer:
        return answer.status_code
