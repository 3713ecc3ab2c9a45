"""Deployment: the embedded one-machine stack (`deploy.embedded`) and production manifests."""
