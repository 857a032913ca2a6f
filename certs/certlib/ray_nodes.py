"""Ray nodes (docs/ray.md): a certificate for both ends of Ray's mutual TLS, and the
cluster's token."""

from __future__ import annotations

import ipaddress
import secrets

from certlib.certificates import SERVER_AND_CLIENT, new_key, pem_cert, pem_key, sign_leaf
from certlib.messages import CertError
from certlib.names import check_folder_name
from certlib.store import Store

# Ray's gRPC clients check the server's name against the address they dial, and Ray
# dials every node by its IP: a Ray certificate names every address a node has.
RAY_INTERNAL_SANS = ("DNS:localhost", "IP:127.0.0.1")
MAX_RAY_SUBNET = 256  # addresses one certificate lists (a /24)


def subnet_sans(cidrs: list[str]) -> list[str]:
    """Every host address of each subnet, for nodes whose IPs Docker picks (`--scale`)."""
    names = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise CertError(f"bad --subnet {cidr!r} ({exc}): write a network such as 10.213.47.0/26") from None
        if network.num_addresses > MAX_RAY_SUBNET:
            raise CertError(f"--subnet {cidr} has {network.num_addresses} addresses: at most {MAX_RAY_SUBNET} "
                            "(a /24), each written into the certificate")
        names += [f"IP:{ip}" for ip in network.hosts()]
    return names


def ray_token(store: Store) -> bytes:
    """The cluster's token (RAY_AUTH_MODE=token): made once, kept in ca/ for the next node."""
    if not store.exists("ca/ray.token"):
        store.write("ca/ray.token", secrets.token_hex(32).encode(), private=True, for_container=False)
    return store.read("ca/ray.token")


def make_ray_node(store: Store, name: str, sans: list[str], days: int) -> list[str]:
    """NAME/: a certificate for both ends of Ray's mutual TLS (serverAuth and clientAuth),
    the CA, and the cluster's token. Only these certificates open the Ray cluster: the
    SuperLink's is serverAuth alone, which a Ray node refuses from a client."""
    check_folder_name(name, "Ray node", "ray or ray-host-2")
    if not any(n.startswith("IP:") for n in sans):
        raise CertError("a Ray certificate needs the addresses its nodes are dialled at: --san IP:<address> "
                        "(each host's, across machines) or --subnet <CIDR> (one engine's compose network)")
    store.refuse_existing(f"{name}/ray.crt", f"{name}/ray.key")
    ca_cert, ca_key = store.read_ca()
    names = list(dict.fromkeys([*sans, *RAY_INTERNAL_SANS]))
    key = new_key()
    cert = sign_leaf(ca_cert, ca_key, f"ray {name}", key.public_key(), names, SERVER_AND_CLIENT, days)
    store.write(f"{name}/ray.key", pem_key(key), private=True)
    store.write(f"{name}/ray.crt", pem_cert(cert))
    store.write(f"{name}/ca.crt", pem_cert(ca_cert))
    store.write(f"{name}/ray.token", ray_token(store), private=True)
    return names
