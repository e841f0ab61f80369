"""ServerApp component: ``ActivityFedAvg`` (trustml.federated.flower.server_app)."""

from trustml.federated.flower.server_app import app

__all__ = ["app"]
