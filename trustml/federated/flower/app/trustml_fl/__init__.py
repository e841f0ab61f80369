"""The trustml Flower app: components re-exported from trustml.federated.flower."""
