"""Azure Blob model registry, store-and-forward log shipping, cloud scoring endpoint client."""
