"""The pod's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``, written from
its microVM spec as the kubelet and its container runtime write them on a node: the
kubelet's managed hosts file (the pod's own names, then its ``hostAliases``), and the
resolver line by line as containerd writes it (search, nameservers, options). Pure:
the host's own resolv.conf comes in as text.
"""

from __future__ import annotations

from vk_fargate.fleet import models

HOSTNAME_MAX = 63  # the kubelet cuts a pod's hostname to one DNS label
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32

HOSTS_HEADER = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def short_name(spec: models.MicroVMSpec, *, default: str) -> str:
    """The pod's hostname label: the spec's, else ``default`` cut to 63 characters."""
    return spec.hostname or default[:HOSTNAME_MAX].rstrip("-.")


def hostname(spec: models.MicroVMSpec, *, default: str) -> str:
    """The kernel hostname its containers get: ``<hostname>.<domain>`` when the pod
    asked for its FQDN (``setHostnameAsFQDN``) and has a domain, else the label."""
    name = short_name(spec, default=default)
    return f"{name}.{spec.domain}" if spec.hostname_as_fqdn and spec.domain else name


def hosts(spec: models.MicroVMSpec, ip: str, *, default: str) -> str:
    """``/etc/hosts`` as the kubelet's ``managedHostsFileContent`` writes it."""
    name = short_name(spec, default=default)
    own = f"{ip}\t{name}.{spec.domain}\t{name}\n" if spec.domain else f"{ip}\t{name}\n"
    text = HOSTS_HEADER + own
    if spec.host_aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{a.ip}\t{chr(9).join(a.hostnames)}\n" for a in spec.host_aliases)
    return text


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """Nameservers, searches and options of a resolv.conf (the last search or domain
    line wins, as the resolver reads it)."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            searches = values
        elif key == "options":
            options += values
    return servers, searches, options


def merge_options(first: list[str], then: list[str]) -> list[str]:
    """Options by name, ``then`` over ``first``, in first-seen order."""
    merged: dict[str, str] = {}
    for option in [*first, *then]:
        merged[option.partition(":")[0]] = option
    return list(merged.values())


def resolv_conf(dns: models.DNSConfig | None, host: str) -> str:
    """The pod's resolv.conf: the host's text as it is when ``dns`` is None; else the
    spec's resolver (extending the host's when ``dns.extend_host``)."""
    if dns is None:
        return host
    servers, searches, options = list(dns.nameservers), list(dns.searches), list(dns.options)
    if dns.extend_host:
        base_servers, base_searches, base_options = parse_resolv_conf(host)
        servers = list(dict.fromkeys(base_servers + servers))[:MAX_NAMESERVERS]
        searches = list(dict.fromkeys(base_searches + searches))[:MAX_SEARCHES]
        options = merge_options(base_options, options)
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {server}" for server in servers]
    if options:
        lines.append("options " + " ".join(options))
    return "".join(f"{line}\n" for line in lines)
