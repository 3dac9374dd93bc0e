"""The replicas a parallel job spreads over, each with a channel of its own.

Targets are a list of addresses, or one `dns:///host:port` name that
resolves to several (the chart's headless Service gives one A record per
pod). The name is resolved at the start of each parallel job, so a job sees
the replicas that exist then; the server's --max_connection_age_seconds
makes long-lived clients reconnect, and so resolve again, for the others.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from typing import List, Optional, Sequence, Tuple, Union

import grpc

from bonsai import chunk_wire, model_files
from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc

Targets = Union[str, Sequence[str]]


def _split_host_port(hostport: str, default_port: int = 50051) -> Tuple[str, int]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return hostport, default_port
    return host, int(port)


def _address_target(address: str, port: int) -> str:
    ip = ipaddress.ip_address(address)
    return f"ipv6:[{address}]:{port}" if ip.version == 6 else f"ipv4:{address}:{port}"


def target_list(targets: Targets) -> List[str]:
    return [targets] if isinstance(targets, str) else list(targets)


def resolve(targets: Targets) -> List[Tuple[str, Optional[str]]]:
    """[(channel target, host name for TLS or None)], one per replica, in a
    stable order, duplicates dropped."""
    result: List[Tuple[str, Optional[str]]] = []
    for target in target_list(targets):
        if target.startswith("dns:"):
            hostport = target[len("dns:"):]
            if hostport.startswith("//"):
                hostport = hostport[2:].partition("/")[2]  # drop the (unused) DNS authority
            host, port = _split_host_port(hostport)
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as err:
                raise ValueError(f"cannot resolve {target}: {err}") from None
            for address in sorted({info[4][0] for info in infos}):
                result.append((_address_target(address, port), host))
        else:
            result.append((target, None))
    seen = set()
    unique = []
    for entry in result:
        if entry[0] not in seen:
            seen.add(entry[0])
            unique.append(entry)
    return unique


class Replica:
    """One server: its channel, the jobs it runs for us, its capacity."""

    def __init__(self, target: str, tls_host: Optional[str], credentials, options: list):
        self.target = target
        opts = list(options)
        if credentials is not None and tls_host and not any(k == "grpc.ssl_target_name_override" for k, _ in opts):
            opts.append(("grpc.ssl_target_name_override", tls_host))
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=opts)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=opts)
        self.stub = pb_grpc.CompressorStub(self.channel)
        self.compress_rpc = chunk_wire.compress_rpc(self.channel)
        self.capacity = 1
        self.in_flight = 0
        self.avoid_until = 0.0  # after a refusal or a failure, others go first for a while
        self.lock = threading.Lock()

    def probe(self, timeout: float) -> bool:
        """Reads the replica's job capacity for this client (workers + queued, at most
        its per-client cap); False if it does not answer."""
        try:
            limits = self.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=timeout).limits
        except grpc.RpcError:
            return False
        slots = int(limits.workers) + int(limits.max_queued_jobs)
        # One client may hold fewer than all of them (--max_jobs_per_peer): a
        # global job whose shards wait for each other must never plan more
        # jobs at once than it can have admitted, or the last ones wait for
        # slots the first ones hold until the exchange is settled.
        if limits.max_jobs_per_peer:
            slots = min(slots, int(limits.max_jobs_per_peer))
        self.capacity = max(1, slots)
        self.limits = limits
        return True

    def close(self) -> None:
        self.channel.close()


def channel_target(targets: List[str]) -> str:
    """One channel target for calls that go to any replica: IP addresses as
    one round-robin `ipv4:`/`ipv6:` list, otherwise the first target."""
    if len(targets) == 1:
        return targets[0]
    addresses = []
    for target in targets:
        host, port = _split_host_port(target)
        try:
            addresses.append(_address_target(host, port))
        except ValueError:
            return targets[0]
    if all(a.startswith("ipv4:") for a in addresses):
        return "ipv4:" + ",".join(a[len("ipv4:"):] for a in addresses)
    return targets[0]


def worth_spreading(targets: Targets, model) -> bool:
    """The default of parallel=None: several replicas and a folder of several
    shards. Here rather than in bonsai.parallel so that deciding costs no
    import of it (and of numpy): ~0.1 s of every CLI start."""
    if not model_files.is_folder(model):
        return False
    try:
        if len(resolve(targets)) < 2:
            return False
    except ValueError:
        return False
    shards = [f for f in model_files.collect(model) if f.name.endswith(".safetensors")]
    return len(shards) > 1
