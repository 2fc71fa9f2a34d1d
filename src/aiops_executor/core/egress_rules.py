"""The rules of the egress policy (``AIOPS_EGRESS_ALLOW`` / ``AIOPS_EGRESS_DENY``) and their parser.

Apart from ``egress`` so that the settings can check the rules when they are loaded without importing the
policy, which reads the settings.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRuleError(ValueError):
    """A rule of AIOPS_EGRESS_ALLOW / AIOPS_EGRESS_DENY cannot be parsed."""


@dataclass(frozen=True)
class Rule:
    text: str
    source: str  # ALLOW_SETTING / DENY_SETTING, with "(prod default)" etc. for built-in rules
    network: IPNetwork | None = None
    host_pattern: str | None = None  # lower-case glob
    port: int | None = None
    note: str = ""  # e.g. "prod default"

    def matches(self, host: str, address: IPAddress | None, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is not None:
            return address is not None and _in_network(address, self.network)
        if self.host_pattern is not None:
            return fnmatch.fnmatchcase(normalise_host(host), self.host_pattern)
        return True  # a port-only rule

    def describe(self) -> str:
        return f"{self.source} rule {self.text}" + (f" ({self.note})" if self.note else "")


def _in_network(address: IPAddress, network: IPNetwork) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _port(text: str, rule: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EgressRuleError(f"egress rule {rule!r}: {text!r} is not a port (1-65535)")
    return int(text)


def parse_rule(text: str, source: str, note: str = "") -> Rule:
    parsed = _parse_rule(text, source)
    return Rule(parsed.text, source, parsed.network, parsed.host_pattern, parsed.port, note)


def _parse_rule(text: str, source: str) -> Rule:
    rule = text.strip()
    if not rule:
        raise EgressRuleError("empty egress rule")
    host, port = rule, None
    if rule.startswith(":") and _network_or_none(rule) is None:
        return Rule(rule, source, port=_port(rule[1:], rule))
    if rule.startswith("["):
        inside, _, rest = rule[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise EgressRuleError(f"egress rule {rule!r}: expected ':port' after ']'")
            port = _port(rest[1:], rule)
        host = inside
    else:
        network = _network_or_none(rule)
        if network is not None:
            return Rule(rule, source, network=network)
        if rule.count(":") == 1:
            host, _, port_text = rule.partition(":")
            port = _port(port_text, rule)
    network = _network_or_none(host)
    if network is not None:
        return Rule(rule, source, network=network, port=port)
    pattern = normalise_host(host)
    if not pattern or not all(c.isalnum() or c in "-._*?" for c in pattern):
        raise EgressRuleError(f"egress rule {rule!r} is not a CIDR, an address, a host name or ':port'")
    return Rule(rule, source, host_pattern=pattern, port=port)


def _network_or_none(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return None


def parse_rules(value: str | Iterable[str] | None, source: str, note: str = "") -> tuple[Rule, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(parse_rule(item, source, note) for item in items if item.strip())
