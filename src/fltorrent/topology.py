"""Overlay topologies: who is whose neighbour. Peer ids start at 1.

Builders return an undirected :class:`networkx.Graph` on nodes ``1..n``. The tracker builds the
graph from the member list; peers only ever see their own neighbour lists.

* ``star``: peer 1 in the middle.
* ``ring``: a cycle.
* ``mesh``: every peer has ``connections`` neighbours: a seeded random regular graph (short
  paths, like an expander) when ``n * connections`` is even, otherwise the Harary graph
  H(connections, n), whose degrees are ``connections`` but one ``connections + 1``.
* ``tree``: a complete ``branching``-ary tree in breadth-first order.
* ``full``: everyone with everyone.
* ``custom``: an adjacency mapping ``{1: [2, 3], 2: [1], ...}``; edges are made symmetric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import networkx as nx

from fltorrent.errors import ConfigError

TopologyType = Literal["star", "ring", "mesh", "tree", "full", "custom"]
TOPOLOGY_TYPES: tuple[str, ...] = ("star", "ring", "mesh", "tree", "full", "custom")


def build_topology(
    kind: str,
    n: int,
    *,
    connections: int = 3,
    branching: int = 2,
    custom_graph: Mapping[int, Sequence[int]] | None = None,
    seed: int = 0,
) -> nx.Graph:
    """Build the overlay graph; raises :class:`ConfigError` if it is invalid or disconnected."""
    if n < 1:
        raise ConfigError("need at least one peer", path="federate.client_num")
    match kind:
        case "star":
            g = nx.star_graph(n - 1)
        case "ring":
            g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
        case "mesh":
            g = _mesh(n, connections, seed)
        case "tree":
            if branching < 1:
                raise ConfigError("must be at least 1", path="topology.branching")
            g = nx.Graph()
            g.add_nodes_from(range(n))
            g.add_edges_from((i, (i - 1) // branching) for i in range(1, n))
        case "full":
            g = nx.complete_graph(n)
        case "custom":
            return _custom(n, custom_graph)
        case _:
            raise ConfigError(
                f"unknown topology {kind!r}; choose one of {', '.join(TOPOLOGY_TYPES)}",
                path="topology.type",
            )
    g = nx.relabel_nodes(g, {i: i + 1 for i in range(n)})
    _check_connected(g, "topology.type")
    return g


def _mesh(n: int, d: int, seed: int) -> nx.Graph:
    if n == 1:
        return nx.empty_graph(1)
    if not 1 <= d <= n - 1:
        raise ConfigError(
            f"a mesh of {n} peers needs 1 to {n - 1} connections per peer, got {d}",
            path="topology.connections",
        )
    if d == 1 and n > 2:
        raise ConfigError(
            f"one connection per peer cannot connect {n} peers", path="topology.connections"
        )
    if (n * d) % 2 == 0:
        for attempt in range(100):
            g = nx.random_regular_graph(d, n, seed=seed + attempt)
            if nx.is_connected(g):
                return g
    return nx.hkn_harary_graph(d, n)


def _custom(n: int, adjacency: Mapping[int, Sequence[int]] | None) -> nx.Graph:
    path = "topology.custom_graph"
    if not adjacency:
        raise ConfigError("a custom topology needs custom_graph", path=path)
    g = nx.Graph()
    g.add_nodes_from(range(1, n + 1))
    for node, neighbours in adjacency.items():
        for other in (node, *neighbours):
            if not 1 <= other <= n:
                raise ConfigError(f"peer id {other} is not in 1..{n}", path=f"{path}.{node}")
        for other in neighbours:
            if other == node:
                raise ConfigError(f"peer {node} lists itself", path=f"{path}.{node}")
            g.add_edge(node, other)
    _check_connected(g, path)
    return g


def _check_connected(g: nx.Graph, path: str) -> None:
    if g.number_of_nodes() > 1 and not nx.is_connected(g):
        parts = [sorted(c) for c in nx.connected_components(g)]
        raise ConfigError(f"the topology is disconnected: components {parts}", path=path)


def neighbours(g: nx.Graph, peer: int) -> list[int]:
    """Sorted neighbour ids of ``peer``."""
    return sorted(g.neighbors(peer))


def repair_edges(
    graph: nx.Graph,
    live: Sequence[int],
    target_degree: Mapping[int, int],
    prefer: Callable[[int], float] = lambda _p: 0.0,
) -> list[tuple[int, int]]:
    """Edges to add (and adds them to ``graph``) after members left, so that the live members'
    overlay keeps its degree and stays connected.

    First every live member below its ``target_degree`` (capped by the live count) gets new
    neighbours: live non-neighbours that are below target themselves first, then the preferred
    (``prefer``: higher is better, e.g. uplink rate), then the least connected, then the lowest
    id. A mesh that lost a third of its members thus stays a mesh of the same degree instead of
    a thin chain through whoever survived. Then each component still apart from the largest is
    linked to it by one edge between preferred members. Deterministic.
    """
    live_set = set(live)
    added: list[tuple[int, int]] = []

    def degree(p: int) -> int:
        return sum(1 for q in graph[p] if q in live_set)

    def wanted(p: int) -> int:
        return min(target_degree.get(p, 0), len(live_set) - 1)

    for p in sorted(live_set):
        while degree(p) < wanted(p):
            candidates = [q for q in live_set if q != p and not graph.has_edge(p, q)]
            if not candidates:
                break
            q = min(candidates, key=lambda q: (degree(q) >= wanted(q), -prefer(q), degree(q), q))
            graph.add_edge(p, q)
            added.append((p, q))
    if len(live_set) > 1:
        parts = sorted(
            nx.connected_components(graph.subgraph(live_set)), key=lambda c: (-len(c), min(c))
        )
        main = set(parts[0])

        def rank(p: int) -> tuple[float, int, int]:
            return (-prefer(p), degree(p), p)

        for part in parts[1:]:
            a, b = min(main, key=rank), min(part, key=rank)
            graph.add_edge(a, b)
            added.append((a, b))
            main |= part
    return added
