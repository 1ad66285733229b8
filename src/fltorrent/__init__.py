"""fltorrent: decentralized federated learning over a BitTorrent-style swarm."""

__version__ = "0.1.0"
