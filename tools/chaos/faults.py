"""The faults of a chaos run: a schedule drawn from the seed (what, when, which process), then carried out one after
another while the load runs. Every kind appears at least once; the times are offsets from the start of the load."""

import os
import random
import signal
import time
from dataclasses import dataclass

from tools.chaos.cluster import Cluster

PG_STOP_SECONDS = 10.0
# What each kind takes, roughly, so a schedule fits its duration; the kinds drawn after the first of each, by weight.
KINDS = {"consumer_kill": (2.0, 3), "api_worker_kill": (2.0, 3), "api_replica_kill": (8.0, 1),
         "nats_restart": (4.0, 1), "pg_stop": (PG_STOP_SECONDS + 4.0, 1)}
WARM_UP, COOL_DOWN = 3.0, 5.0  # seconds of load before the first fault and after the last one
SPACING = 10.0  # one fault per this many seconds of load, at least one of each kind


@dataclass
class Fault:
    at: float  # seconds after the load started
    kind: str
    target: int  # which consumer, replica or node
    mode: str = ""  # pg_stop: fast (clean shutdown) or immediate (a crash; recovery from the WAL)
    started: float | None = None  # monotonic times, as carried out
    ended: float | None = None
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}[{self.target}{'/' + self.mode if self.mode else ''}] at {self.at:.1f}s"


def schedule(seed: int, seconds: float) -> list[Fault]:
    rng = random.Random(f"{seed}:faults")
    kinds = list(KINDS)
    extra = max(0, int(seconds // SPACING) - len(kinds))
    kinds += rng.choices(list(KINDS), [weight for _, weight in KINDS.values()], k=extra)
    while len(kinds) > len(KINDS) and sum(KINDS[k][0] for k in kinds) > seconds - WARM_UP - COOL_DOWN:
        kinds.pop()
    rng.shuffle(kinds)
    slack = max(0.0, seconds - WARM_UP - COOL_DOWN - sum(KINDS[k][0] for k in kinds))
    cuts = sorted(rng.uniform(0, slack) for _ in kinds)  # the idle time before each fault
    faults, at, idle = [], WARM_UP, 0.0
    for kind, cut in zip(kinds, cuts):
        at += cut - idle
        idle = cut
        faults.append(Fault(round(at, 1), kind, rng.randrange(2),
                            rng.choice(["fast", "immediate"]) if kind == "pg_stop" else ""))
        at += KINDS[kind][0]
    return faults


class Injector:
    """Carries out `faults` against `cluster`, each at its time (or when the previous one is over)."""

    def __init__(self, cluster: Cluster, faults: list[Fault], log=print):
        self.cluster, self.faults, self.log = cluster, faults, log
        self.pg_down: list[tuple[float, float]] = []  # (stopped, accepting again), monotonic

    def run(self, started: float) -> None:
        for fault in self.faults:
            if (ahead := started + fault.at - time.monotonic()) > 0:
                time.sleep(ahead)
            fault.started = time.monotonic()
            getattr(self, fault.kind)(fault)
            fault.ended = time.monotonic()
            self.log(f"chaos: {fault.started - started:6.1f}s {fault.kind} {fault.detail} "
                     f"({fault.ended - fault.started:.1f}s)")

    def consumer_kill(self, fault: Fault) -> None:
        consumer = self.cluster.consumers[fault.target % len(self.cluster.consumers)]
        with consumer.lock:
            pid = consumer.process.pid
            consumer.kill()
            time.sleep(1)
            consumer.start()
        fault.detail = f"{consumer.name} pid {pid} killed, started again"

    def api_worker_kill(self, fault: Fault) -> None:
        replica = self.cluster.replicas[fault.target % len(self.cluster.replicas)]
        deadline = time.monotonic() + 30
        while not (workers := replica.workers()) and time.monotonic() < deadline:
            time.sleep(0.2)  # the replica is starting: wait for its workers
        if not workers:
            fault.detail = f"{replica.name} had no worker to kill"
            return
        pid = workers[fault.target % len(workers)]
        os.kill(pid, signal.SIGKILL)  # gunicorn's master starts another
        fault.detail = f"{replica.name} worker pid {pid} killed"

    def api_replica_kill(self, fault: Fault) -> None:
        replica = self.cluster.replicas[fault.target % len(self.cluster.replicas)]
        with replica.lock:
            pid = replica.process.pid
            replica.kill()
            replica.start()
        replica.wait_live()
        fault.detail = f"{replica.name} (master pid {pid} and its workers) killed, started again"

    def nats_restart(self, fault: Fault) -> None:
        node = fault.target % self.cluster.jetstream.nodes
        self.cluster.jetstream.restart_node(node)
        fault.detail = f"node {node} stopped and started again"

    def pg_stop(self, fault: Fault) -> None:
        stopped = time.monotonic()
        self.cluster.postgres.stop(fault.mode)
        time.sleep(PG_STOP_SECONDS)
        self.cluster.postgres.start()
        self.pg_down.append((stopped, time.monotonic()))
        fault.detail = f"pg_ctl stop -m {fault.mode}, {PG_STOP_SECONDS:.0f}s down, started again"
