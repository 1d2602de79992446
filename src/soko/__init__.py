"""Soko (倉庫): a self-hosted private container registry that behaves like Amazon ECR."""

__version__ = "0.1.0"
