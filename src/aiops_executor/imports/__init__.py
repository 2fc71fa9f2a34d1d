"""Imports: topologies made from what a system already describes (Kubernetes manifests)."""
