"""Offline data-preparation jobs (CLIs and pipelines); they import tfvgan_jax, never the reverse."""
