"""Who the client is: ``X-Forwarded-For`` and ``-Proto``, believed only from our proxies.

Anyone can send ``X-Forwarded-For``. The hub believes it only when the connection comes
from its own proxy (loopback, or an address of the hub itself) or from a proxy listed in
``c.Courtyard.trusted_downstream_ips``. Each proxy appends the address it saw, so the
header is read from the right: the client is the right-most entry that is not a listed
proxy. Loopback is trusted as the peer but never skipped as an entry, so a client on this
machine that writes a false address in front of its own still counts as itself.

The rewrite happens once per request, before any endpoint, so the throttle, the logs and
every page see the same address (``request.client``). uvicorn's own proxy-header handling
is off: it trusts one list for both roles, and then a trusted client's forged entry wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """``["10.0.0.5", "192.168.0.0/16"]`` -> networks; a bad entry is a ConfigError."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"c.Courtyard.trusted_downstream_ips: {value!r} is not an IP "
                              "address or network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return networks


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ForwardedClient:
    """Rewrites a request's ``client`` and ``scheme`` from headers sent by trusted proxies."""

    def __init__(self, trusted: Iterable[str], own_addresses: Iterable[str] = ()) -> None:
        self.proxies = parse_networks(trusted)
        self.own = {a for a in (_address(x) for x in own_addresses) if a is not None}
        self._peers: dict[str, bool] = {}

    def is_proxy(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.proxies)

    def trusts_peer(self, host: str) -> bool:
        """Whether a connection from ``host`` may tell us who the client is."""
        known = self._peers.get(host)
        if known is None:
            address = _address(host)
            known = address is not None and (address.is_loopback or address in self.own
                                              or self.is_proxy(address))
            if len(self._peers) < 4096:
                self._peers[host] = known
        return known

    def client(self, forwarded_for: str) -> tuple[str, int] | None:
        """The right-most address that is not a listed proxy (the left-most if all are),
        with its place counted from the right (0: the one our proxy added)."""
        chosen = None
        for hops, entry in enumerate(reversed(forwarded_for.split(","))):
            address = _address(entry)
            if address is None:
                return chosen  # not an address: believe nothing further left
            chosen = str(address), hops
            if not self.is_proxy(address):
                break
        return chosen

    def apply(self, scope: Scope) -> None:
        peer = scope.get("client")
        if not peer or not self.trusts_peer(peer[0]):
            return
        forwarded_for: list[bytes] = []
        protos: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                protos.append(value)
        hops = 0
        if forwarded_for:
            found = self.client(b",".join(forwarded_for).decode("latin-1"))
            if found is not None:
                scope["client"] = (found[0], 0)
                hops = found[1]
        if protos:
            # one value per proxy too: the scheme the chosen client used
            schemes = b",".join(protos).decode("latin-1").split(",")
            scheme = schemes[max(0, len(schemes) - 1 - hops)].strip().lower()
            if scheme in ("http", "https"):
                scope["scheme"] = scheme
