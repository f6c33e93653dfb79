"""MDAD inventories for tests: `inventory/hosts` and `host_vars/matrix.<domain>/vars.yml` shaped
like MDAD's examples/vars.yml, with the server's secrets in them (tests assert none leaks), and
pickle-key pins in either naming era."""

from __future__ import annotations

from pathlib import Path

from bridgedoctor.fixes import yaml_str
from bridgedoctor.knowledge import load

# What an admin's vars.yml holds besides pins; none of it may ever reach an output.
GENERIC_SECRET = "generic-secret-key-3f9c0a7e1b2d"
POSTGRES_PASSWORD = "postgres-connection-password-77aa"
SECRETS = (GENERIC_SECRET, POSTGRES_PASSWORD)

HEAD = """\
# The bare minimum of an MDAD vars.yml (examples/vars.yml), as an admin has it.
matrix_domain: {domain}
matrix_homeserver_implementation: synapse
matrix_homeserver_generic_secret_key: '{secret}'
matrix_playbook_reverse_proxy_type: playbook-managed-traefik
traefik_config_certificatesResolvers_acme_email: 'admin@{domain}'
postgres_connection_password: '{pg}'
"""


def prefix(bridge: str, era: str) -> str:
    spec = load().bridges[bridge]
    return spec.prefix_current if era == "current" else spec.prefix_legacy or ""


def enable(bridge: str, era: str) -> str:
    return f"{prefix(bridge, era)}enabled: true\n"


def pin_variable(bridge: str, key: str, era: str = "current", raw: str | None = None) -> str:
    """`<prefix>bridge_encryption_pickle_key: "<key>"`; `raw` is written as is instead."""
    value = raw if raw is not None else yaml_str(key)
    return f"{prefix(bridge, era)}bridge_encryption_pickle_key: {value}\n"


def pin_extension(bridge: str, key: str, era: str = "current", raw: str | None = None) -> str:
    value = raw if raw is not None else yaml_str(key)
    return (
        f"{prefix(bridge, era)}configuration_extension_yaml: |\n"
        "  bridge:\n"
        "    personal_filtering_spaces: true\n"
        "  encryption:\n"
        f"    pickle_key: {value}\n"
    )


def write_inventory(
    root: Path, body: str, domain: str = "example.com", host: str | None = None
) -> Path:
    """An inventory directory with one host; returns the directory (what --inventory takes)."""
    host = host or f"matrix.{domain}"
    inv = root / "inventory"
    (inv / "host_vars" / host).mkdir(parents=True, exist_ok=True)
    (inv / "hosts").write_text(
        f"[matrix_servers]\n{host} ansible_host=192.0.2.10 ansible_ssh_user=root\n"
    )
    head = HEAD.format(domain=domain, secret=GENERIC_SECRET, pg=POSTGRES_PASSWORD)
    (inv / "host_vars" / host / "vars.yml").write_text(head + body)
    return inv
