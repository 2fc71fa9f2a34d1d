"""The egress policy for name lookups: a lookup is traffic too -- to the system resolver's name servers, about a
name -- so a tool that resolves names (``dns_lookup``) asks here before it sends anything."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from aiops_executor.core.egress import EgressDenied, EgressPolicy, active_policy, expanded, literal_addresses

DNS_PORT = 53
RESOLV_CONF = "/etc/resolv.conf"
GLIBC_DEFAULT_NAMESERVER = "127.0.0.1"


def system_nameservers(path: str = RESOLV_CONF) -> list[str]:
    """The name servers the system resolver asks (``nameserver`` lines; glibc's default when there are none)."""
    try:
        words = [line.split() for line in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        words = []
    found = [w[1] for w in words if len(w) >= 2 and w[0] == "nameserver" and _is_address(w[1])]
    return found or [GLIBC_DEFAULT_NAMESERVER]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def authorize_lookup(host: str, policy: EgressPolicy | None = None) -> None:
    """Checks a lookup of ``host`` before it is sent: the name against the rules on names, and every name server
    the system resolver would ask (port 53) against the rules on addresses. Raises ``EgressDenied``."""
    policy = await expanded(policy or active_policy())
    literal_addresses(policy, host, None)  # raises for a rule on the name
    for server in system_nameservers():
        decision = policy.decide(server, DNS_PORT, [server])
        if not decision.allowed:
            raise EgressDenied(decision)
