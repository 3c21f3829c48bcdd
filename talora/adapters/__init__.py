"""Trained adapters at rest: their files and base-model check (files), the per-task store a server
reads (store), and adapters on the Hugging Face hub (hub)."""
