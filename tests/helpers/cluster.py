"""
A private Redis Cluster of real ``redis-server`` processes, and a sequenced publisher.

:class:`RedisClusterProcesses` starts ``masters`` (+ ``replicas`` per master) nodes
on free loopback ports, each with its own config and data directory, joins them
with ``redis-cli --cluster create --cluster-yes`` and waits (polling, with a
deadline) until every node reports ``cluster_state:ok`` and knows every other node.
Nodes are stopped by the PIDs we started. Nothing here touches the shared Redis.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from quotes_core import ShardMap, key_slot
from quotes_core.testing import upstream_message
from tests.helpers.processes import REDIS_INSTALL_HINT, TestSetupError, _stop, free_port, wait_until


@dataclass(eq=False)
class Node:
    port: int
    dir: Path
    bus_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self, section: str) -> dict[str, object]:
        with contextlib.closing(self.client()) as c:
            return dict(c.info(section))

    def command(self, *args: str | int) -> object:
        with contextlib.closing(self.client()) as c:
            return c.execute_command(*args)


def _cluster_info(node: Node) -> dict[str, object]:
    with contextlib.closing(node.client()) as c:
        return dict(c.cluster("info"))


class RedisClusterProcesses:
    """A Redis Cluster of ``masters * (1 + replicas)`` local ``redis-server`` processes."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise TestSetupError(REDIS_INSTALL_HINT)
        self.binary, self.cli = binary, cli
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="quotes-cluster-"))
        self.nodes: list[Node] = []
        for i in range(masters * (1 + replicas)):
            d = self.root / f"node{i}"
            d.mkdir()
            self.nodes.append(Node(free_port(), d, free_port()))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def _start_node(self, node: Node) -> None:
        argv = [
            self.binary,
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # replicas are promoted only by failover_to (CLUSTER FAILOVER FORCE), so a
            # test decides when a dead master's shards come back
            "--cluster-replica-no-failover", "yes",
            # an explicit bus port: the default (port + 10000) may not exist or be taken
            "--cluster-port", str(node.bus_port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(node.dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        node.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _pings(self, node: Node) -> bool:
        if node.proc is None or node.proc.poll() is not None:
            raise TestSetupError(f"redis-server on port {node.port} exited")
        try:
            return bool(node.command("PING"))
        except RedisError:
            return False

    def start(self) -> RedisClusterProcesses:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            for attempt in range(3):
                try:
                    wait_until(lambda n=node: self._pings(n), timeout=10, what=f"node {node.port}")
                    break
                except TestSetupError:
                    # a free port can be taken between choosing it and binding it (a
                    # busy machine's outgoing connections use the same range): new ports
                    if attempt == 2:
                        raise
                    node.port, node.bus_port = free_port(), free_port()
                    self._start_node(node)
        argv = [self.cli, "--cluster", "create"]
        argv += [f"127.0.0.1:{n.port}" for n in self.nodes]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise TestSetupError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")
        self.wait_ok()
        if self.replicas:
            wait_until(self._replicas_synced, timeout=30, what="replicas in sync")
        return self

    def _node_ok(self, node: Node) -> bool:
        try:
            info = _cluster_info(node)
        except RedisError:
            return False
        alive = sum(1 for n in self.nodes if n.alive())
        return (
            info.get("cluster_state") == "ok"
            and int(str(info.get("cluster_known_nodes", 0))) >= alive
            and int(str(info.get("cluster_slots_ok", 0))) == 16384
        )

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says the cluster is ok and agrees on the owners."""

        def ok() -> bool:
            live = [n for n in self.nodes if n.alive()]
            if not all(self._node_ok(n) for n in live):
                return False
            views = {tuple(sorted(self.slot_owners(n).items())) for n in live}
            return len(views) == 1

        wait_until(ok, timeout=timeout, interval=0.1, what="cluster_state:ok on every node")

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            if not node.alive():
                continue
            info = node.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def slot_owners(self, node: Node | None = None) -> dict[tuple[int, int], int]:
        """``(first, last)`` slot range -> port of its master, as ``node`` sees it."""
        asker = node or next(n for n in self.nodes if n.alive())
        reply = asker.command("CLUSTER", "SLOTS")
        assert isinstance(reply, list)
        return {(int(r[0]), int(r[1])): int(r[2][1]) for r in reply}

    def owner(self, channel: str) -> Node:
        """The master that owns ``channel``'s slot now."""
        slot = key_slot(channel)
        for (first, last), port in self.slot_owners().items():
            if first <= slot <= last:
                return self.node(port)
        raise LookupError(f"slot {slot} not covered")

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def masters_now(self) -> list[Node]:
        return sorted({self.node(p) for p in self.slot_owners().values()}, key=lambda n: n.port)

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node.alive() and node is not master:
                info = node.info("replication")
                if (
                    info.get("role") == "slave"
                    and int(str(info.get("master_port", 0))) == master.port
                ):
                    return node
        raise LookupError(f"no replica of {master.port}")

    def kill(self, node: Node) -> None:
        """SIGKILL one node by PID, as a crash would."""
        if node.proc is not None:
            _stop(node.proc, signal.SIGKILL)

    def failover_to(self, replica: Node) -> None:
        """Promote ``replica`` now (its master is dead): ``CLUSTER FAILOVER FORCE``."""
        replica.command("CLUSTER", "FAILOVER", "FORCE")
        wait_until(
            lambda: replica.info("replication").get("role") == "master",
            timeout=20,
            what=f"replica {replica.port} promoted",
        )
        self.wait_ok()

    def migrate_slot(self, slot: int, target: Node) -> Node:
        """
        Move an empty slot (pub/sub channels only) to ``target`` the way
        ``redis-cli --cluster reshard`` does: IMPORTING, MIGRATING, then NODE everywhere.
        """
        source = next(self.node(p) for (a, b), p in self.slot_owners().items() if a <= slot <= b)
        src_id = str(source.command("CLUSTER", "MYID"), "ascii")
        dst_id = str(target.command("CLUSTER", "MYID"), "ascii")
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        target.command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        source.command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in self.nodes:
            if node.alive() and node not in (source, target):
                with contextlib.suppress(RedisError):
                    node.command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_ok()
        return source

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                _stop(node.proc, signal.SIGKILL)
                node.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class ShardedPublisher:
    """
    SPUBLISH sequenced quotes round-robin over ``tickers`` from a thread, cluster-aware.

    ``acked[ticker]`` lists the sequence numbers Redis acknowledged; a failed
    SPUBLISH (node down) is counted in ``failed`` and the sequence number skipped.
    """

    url: str
    tickers: list[str]
    shards: ShardMap
    cluster: bool = True
    pause: threading.Event = field(default_factory=threading.Event)
    acked: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ShardedPublisher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _client(self) -> redis.Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def _run(self) -> None:
        client = self._client()
        seq = 0
        try:
            while not self._stop.is_set():
                if self.pause.is_set():
                    self._stop.wait(0.01)
                    continue
                seq += 1
                for ticker in self.tickers:
                    try:
                        client.spublish(self.shards.channel(ticker), upstream_message(ticker, seq))
                    except Exception:  # node down, failover under way: skipped, counted
                        self.failed += 1
                    else:
                        self.acked[ticker].append(seq)
                # paced, not timed: ~200 rounds/s keeps the 2-core box usable
                self._stop.wait(0.005)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def total(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
