"""Adapter onto Flower 1.41's simulation engine: hand new messages to the workers in
O(new messages) instead of O(nodes x stored messages) per tick.

Flower's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) moves
instructions from the in-memory SuperLink state to its Ray workers with one thread,
``add_messages_to_queue``, which every 0.1 s calls ``state.get_message_ins(node_id,
limit=1)`` for *every* registered node; each call walks *every* stored instruction (a
delivered one stays stored until its reply is pulled) and re-validates each (TTL,
federation) under the state lock. At N nodes with a round's N instructions stored, one
tick costs N x N validations, about 1 M at N = 1,000: the thread never sleeps, holds the
state lock most of the time and takes a core from the two Ray workers
(``docs/scaling.md`` has the profile).

:func:`install` replaces that one thread function, for an in-memory state only, by
:func:`dispatch_new_messages`: each tick it walks the stored instruction ids once, skips
the ones already handed out (a set), validates each new one once with the state's own
check, marks it delivered exactly as ``get_message_ins`` does and queues it -- in the
order the ServerApp pushed them (Flower's walk is in node order), so the round's
longest device work starts first. One instruction per node per tick, as Flower does.
Any other state (SQL) keeps Flower's function.

Upstream fix: ``InMemoryLinkState`` keeps an index of undelivered instruction ids per
node (or one FIFO of undelivered ids), so ``get_message_ins`` is O(messages returned),
and the engine asks the state once per tick for all nodes' next message instead of
once per node.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from queue import Queue

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord
from flwr.serverapp import Grid
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.date import now
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

__all__ = ["install", "dispatch_new_messages", "flower_add_messages_to_queue", "standalone_link", "TICK_S"]

#: seconds between dispatch ticks (Flower's: 0.1 s); a tick with nothing new costs one
#: walk over the stored ids' set membership, ~50 us at 1,000 stored messages
TICK_S = 0.02

#: Flower's own dispatch function (kept for other states, and for comparison)
flower_add_messages_to_queue = vce_api.add_messages_to_queue


def dispatch_new_messages(state: object, queue: Queue[Message], nodes_mapping: Mapping[int, int], f_stop: threading.Event) -> None:
    """Drop-in for ``vce_api.add_messages_to_queue``; runs until ``f_stop`` is set.

    Parameters
    ----------
    state : LinkState
        The SuperLink state; anything but ``InMemoryLinkState`` is served by Flower's
        own function.
    queue : Queue[Message]
        The engine's instruction queue; its workers take from it in FIFO order.
    nodes_mapping : Mapping[int, int]
        node id -> partition id of the simulated nodes (only their messages are taken).
    f_stop : threading.Event
        Set by the engine to stop.
    """
    if not isinstance(state, InMemoryLinkState):
        flower_add_messages_to_queue(state, queue, nodes_mapping, f_stop)  # type: ignore[arg-type]
        return
    nodes = set(nodes_mapping)
    handed: set[str] = set()  # instruction ids queued (or found invalid and dropped)
    while not f_stop.is_set():
        out: list[Message] = []
        with state.lock:
            store = state.message_ins_store
            new = [mid for mid in store if mid not in handed]
            if len(handed) > 2 * len(store) + 1024:  # forget replied-and-deleted ids
                handed.intersection_update(store)
            busy: set[int] = set()
            for mid in new:
                state._check_stored_messages({mid})  # TTL and federation, as get_message_ins does
                msg = store.get(mid)
                if msg is None:
                    handed.add(mid)
                    continue
                dst = msg.metadata.dst_node_id
                if dst not in nodes or dst in busy:
                    continue  # another consumer's, or this node's next message: next tick
                if msg.metadata.delivered_at == "":
                    busy.add(dst)
                    out.append(msg)
                handed.add(mid)
            delivered_at = now().isoformat()
            for msg in out:
                msg.metadata.delivered_at = delivered_at
        for msg in out:
            queue.put(msg)
        f_stop.wait(TICK_S)


#: the actor each engine thread submitted its current message to (see _replace_dead_workers)
_submitted = threading.local()


def _replace_dead_workers() -> None:
    """Make Flower's Ray actor pool replace a worker that died instead of reusing it.

    Flower 1.41's ``RayBackend.process_message`` puts the actor back into the pool when
    its job raised, whatever the cause; a worker process that was killed (OOM killer, a
    fault injected on purpose) is then handed every later message, and each fails with
    ``ActorDiedError``: one dead worker fails its share of every round that follows. Here
    the pool's ``submit`` notes which actor took the thread's message, and when
    ``process_message`` fails with ``RayActorError`` that actor is swapped for a fresh one
    (``create_actor_fn``, the pool's own constructor); the failing message stays failed.

    Upstream fix: ``process_message`` returns an actor to the pool only when its error was
    raised by the ClientApp, and recreates it otherwise.
    """
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    if getattr(RayBackend.process_message, "_airfleet", False):
        return
    flower_submit, flower_process = BasicActorPool.submit, RayBackend.process_message

    def submit(self: BasicActorPool, actor_fn: object, job: tuple) -> object:  # type: ignore[type-arg]
        _submitted.actor = self.pool[-1] if self.pool else None  # what flower_submit pops
        return flower_submit(self, actor_fn, job)

    def process_message(self: RayBackend, message: Message, context: object) -> object:
        _submitted.actor = None
        try:
            return flower_process(self, message, context)
        except Exception as e:
            if not any(c.__name__ == "RayActorError" for c in type(e).__mro__):  # ray.exceptions, by name: only flwr is imported here
                raise
            dead, pool = _submitted.actor, self.pool
            if dead is not None and pool is not None:
                for i, a in enumerate(pool.pool):
                    if a is dead:
                        pool.pool[i] = pool.create_actor_fn()
                        break
            raise

    process_message._airfleet = True  # type: ignore[attr-defined]
    BasicActorPool.submit = submit  # type: ignore[method-assign]
    RayBackend.process_message = process_message  # type: ignore[method-assign]


def install() -> None:
    """Make Flower's simulation engine use :func:`dispatch_new_messages` and replace Ray
    workers that die (:func:`_replace_dead_workers`); idempotent.

    Must run before the engine starts (``run_simulation`` looks the function up when it
    starts its dispatch thread); ``server.app`` calls it on import.
    """
    vce_api.add_messages_to_queue = dispatch_new_messages  # type: ignore[assignment]
    _replace_dead_workers()


def standalone_link(n_nodes: int, run_id: int = 77) -> tuple[Grid, InMemoryLinkState, dict[int, int]]:
    """An in-memory SuperLink with one run and ``n_nodes`` registered nodes, set up as
    ``flwr.simulation.run_simulation`` sets it up, without an engine (tests, benchmarks).

    Returns the ServerApp's grid, the state and the node id -> partition id mapping.
    """
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    assert isinstance(state, InMemoryLinkState)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = run_id + 1
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    state.run_ids[run_id] = RunRecord(run=run)
    state.task_store[run_id + 1] = Task(task_id=run_id + 1, run_id=run_id)
    nodes = vce_api._register_nodes(n_nodes, factory)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return grid, state, nodes
