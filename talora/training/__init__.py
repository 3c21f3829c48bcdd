"""The one trainer every method and recipe uses (``trainer``) and its resumable checkpoints."""
