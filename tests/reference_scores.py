"""A recipe's accuracy, and candidates' scores, recomputed the slow, obvious way (``from reference_scores
import ...``), so tests check a reported score against a known value instead of a range.

Each example is encoded again from the task's file, each label word is appended to it in turn, the
model runs once per (example, word) pair on the full sequence, and the word with the highest summed
log-probability of its tokens is the prediction. Nothing is batched, cached, gathered or shortcut,
so a mistake in the split, the cap, the task id, the verbaliser or the metric shows as a mismatch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from talora import tasks as T
from talora.adapters.files import load_adapter
from talora.core.batching import answer_batch, encode, prompt_batch
from talora.core.forward import hidden_at, output_head
from talora.core.predict import RANK_ROWS


def full_logit_accuracy(backbone, method, items, words=None, labels=None) -> float:
    """Share of ``items`` whose label ranks first; ``words``/``labels``: the label words (token ids) and
    names, or None for multiple choice (each item's own candidates, named by their index)."""
    emb = backbone.model.get_input_embeddings()
    pad = backbone.tokenizer.pad_token_id
    right = 0
    with torch.no_grad(), method.applied(backbone):
        for e in items:
            prompts = method.prompt_inputs(torch.tensor([e.task_id]), batch=prompt_batch([e], pad))
            scores, candidates = [], words if words is not None else e.candidates
            names = labels if labels is not None else [str(i) for i in range(len(candidates))]
            for w in candidates:
                ids = torch.tensor([list(e.prompt) + list(w)])
                if prompts.input_prefix is not None:
                    prefix = prompts.input_prefix.to(emb.weight.dtype)
                    logits = backbone.model(inputs_embeds=torch.cat([prefix, emb(ids)], 1)).logits[:, prefix.shape[1] :]
                else:
                    logits = backbone.model(input_ids=ids, talora_prompts=prompts.layer_prompts).logits
                logp = logits[0].float().log_softmax(-1)
                scores.append(sum(logp[len(e.prompt) - 1 + j, t].item() for j, t in enumerate(w)))
            right += names[max(range(len(candidates)), key=scores.__getitem__)] == e.label
    return right / len(items)


def adapter_accuracy(backbone, adapter: Path, task: str, split: str, max_length: int, lines: int = 0) -> float:
    """The accuracy of the adapter in folder ``adapter`` on the ``lines`` scored lines (0: all) of
    ``split`` of the synthetic task ``task``: the seeded, stratified sample of ``T.scored_sample``."""
    method, specs = load_adapter(adapter, backbone)
    spec = specs[task]
    examples = T.load_tasks(None, [task])[task].splits[split]
    examples = [examples[i] for i in T.scored_sample(examples, lines, 0, spec.labels)]
    task_id = method.task_names.index(task)
    items = [encode(spec, ex, backbone.tokenizer, max_length, task_id) for ex in examples]
    words = [
        tuple(backbone.tokenizer(spec.label_words[lab], add_special_tokens=False)["input_ids"]) for lab in spec.labels
    ]
    return full_logit_accuracy(backbone, method, items, words, list(spec.labels))


def score_candidates_by_expansion(
    backbone, method, items, candidates: list[tuple[tuple[int, ...], ...]], lower=None
) -> list[torch.Tensor]:
    """The reference for ``talora.core.predict.score_candidates`` on multi-token candidates (also timed
    by benchmarks/rank_speed.py): every (example, candidate) pair runs as its own full-length row
    (prompt + candidate), so the prompt is recomputed once per candidate. Same scores, no shortcut."""
    pad = backbone.tokenizer.pad_token_id
    weight, bias = output_head(backbone)
    expanded = [replace(e, answer=c) for e, cs in zip(items, candidates) for c in cs]
    per_row = torch.zeros(len(expanded))
    for start in range(0, len(expanded), RANK_ROWS):
        batch = answer_batch(expanded[start : start + RANK_ROWS], pad)
        logprobs = F.linear(hidden_at(backbone, method, batch, lower), weight, bias).float().log_softmax(-1).cpu()
        token_scores = logprobs.gather(1, batch.targets[:, None])[:, 0]
        per_row.index_add_(0, batch.rows + start, token_scores)
    out, start = [], 0
    for cs in candidates:
        out.append(per_row[start : start + len(cs)])
        start += len(cs)
    return out
