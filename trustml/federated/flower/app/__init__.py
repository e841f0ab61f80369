"""Flower app template of trustml (see README.md)."""
