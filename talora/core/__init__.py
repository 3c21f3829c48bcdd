"""The frozen model and what runs it: loading (backbone), the prompt attention, tokenised batches,
the prompted forward pass and its loss, the lower-layer cache, ranking, generation and evaluation.

Below the methods: nothing here imports ``talora.methods``; a method is seen through
``core.prompts.Prompter``, the part of it a forward pass needs.
"""
