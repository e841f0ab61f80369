"""ClientApp component: one device of the corpus (trustml.federated.flower.client_app)."""

from trustml.federated.flower.client_app import app

__all__ = ["app"]
