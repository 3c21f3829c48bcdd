"""Analyses of trained adapters and training logs; each writes a Markdown table, a PNG and the numbers as JSON."""
