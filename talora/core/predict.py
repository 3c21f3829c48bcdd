"""Predictions of a prompted frozen model: label-word ranking, KV-cached greedy generation, and
scoring a set of examples with each task's metric.

A batch may mix tasks and kinds: every example is routed to its own task's prompts and
its own verbalizer, so one forward pass serves many tasks (as a server needs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..distributed import world
from ..errors import ConfigError, DataError
from ..progress import progress
from ..tasks import compute_metrics, question_of
from ..tasks.base import Example
from ..tasks.kinds import LABEL_SCORING, STOP, TaskKind, task_kind
from ..tasks.templates import template_fields
from .backbone import Backbone
from .batching import Encoded, encode, prompt_batch
from .forward import compute_precision, hidden_at, output_head, prefix_left_padded

if TYPE_CHECKING:
    from ..tasks import TaskSpec
    from .attention import LayerPrompts
    from .lower_cache import LowerLayerCaches
    from .prompts import Prompter


# The inputs contextual calibration reads a task's label prior from (``label_scoring: calibrated``,
# talora/tasks/kinds.py): its template with every text field replaced by one of these.
CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class Verbalizer:
    """How one task's answers are scored: the tokenised words ranked for each example (classification:
    label words, in label order; regression: the bins' words, with the bins' values), or, for
    multiple choice, each example's own choices; extraction generates up to ``max_new_tokens``.
    ``scoring`` is one of ``LABEL_SCORING``; calibration scores ``content_free`` (the task's template
    over content-free inputs) for its label prior."""

    labels: tuple[str, ...]
    words: tuple[tuple[int, ...], ...]
    kind: str = "classification"
    metric: str = "accuracy"
    language: str = "en"
    values: tuple[float, ...] = ()
    max_new_tokens: int = 0
    scoring: str = "sum"
    content_free: tuple[Encoded, ...] = ()

    @classmethod
    def of(cls, spec: TaskSpec, tokenizer, scoring: str = "sum", max_length: int = 0) -> Verbalizer:
        if scoring not in LABEL_SCORING:
            raise ConfigError(f"label_scoring must be one of {', '.join(LABEL_SCORING)}, got {scoring!r}")
        words = tuple(
            tuple(tokenizer(spec.label_words[label], add_special_tokens=False)["input_ids"]) for label in spec.labels
        )
        kind = spec.task_kind
        values = kind.values(spec)
        scoring = kind.scoring_for(scoring)
        content_free = content_free_items(spec, tokenizer, max_length) if scoring == "calibrated" else ()
        return cls(
            tuple(spec.labels),
            words,
            spec.kind,
            spec.metric,
            spec.language,
            values,
            spec.max_new_tokens,
            scoring,
            content_free,
        )

    @property
    def task_kind(self) -> TaskKind:
        return task_kind(self.kind)

    def candidates(self, item: Encoded) -> tuple[tuple[int, ...], ...]:
        return self.task_kind.ranked(self, item)

    def adjust(self, scores: torch.Tensor, candidates, prior: torch.Tensor | None = None) -> torch.Tensor:
        """One example's candidate scores under this verbalizer's ``scoring``, from the summed
        log-likelihoods (up to a constant per example) that ``score_candidates`` gives."""
        if self.scoring == "mean":
            return scores / torch.tensor([max(1, len(c)) for c in candidates], dtype=scores.dtype)
        if self.scoring == "calibrated":
            if prior is None:
                raise ValueError("calibrated scoring needs the task's content-free label prior")
            return scores.float().log_softmax(-1) - prior
        return scores

    def decide(self, scores: torch.Tensor) -> str | float:
        """The prediction from one example's candidate scores (log-likelihoods up to a constant)."""
        return self.task_kind.decide(self, scores)


def content_free_items(spec: TaskSpec, tokenizer, max_length: int) -> tuple[Encoded, ...]:
    """The task's template with every text field replaced by each content-free input, encoded."""
    fields = template_fields(spec.template)
    out = []
    for i, filler in enumerate(CONTENT_FREE):
        ex = Example(f"{spec.name}/content-free/{i}", spec.name, {f: filler for f in fields}, spec.labels[0])
        out.append(encode(spec, ex, tokenizer, max_length or 10**9, 0))
    return tuple(out)


def label_priors(
    backbone: Backbone, method: Prompter, verbalizers: dict[int, Verbalizer], task_ids
) -> dict[int, torch.Tensor]:
    """Each calibrated task's log label prior: its label distribution (renormalised over the labels)
    averaged over the content-free inputs, with the method's prompts for that task in place."""
    priors = {}
    for tid in sorted(set(task_ids)):
        verb = verbalizers[tid]
        if verb.scoring != "calibrated":
            continue
        rows = [replace(e, task_id=tid) for e in verb.content_free]
        scores = score_candidates(backbone, method, rows, [verb.words] * len(rows))
        probs = torch.stack([s.float().softmax(-1) for s in scores]).mean(0)
        priors[tid] = probs.log()
    return priors


# Rows of (example, candidate) scored in one forward pass when candidates are several tokens long
# (each such row holds a copy of its prompt's key/value cache).
RANK_ROWS = 64


def score_candidates(
    backbone: Backbone,
    method: Prompter,
    items: list[Encoded],
    candidates: list[tuple[tuple[int, ...], ...]],
    lower: LowerLayerCaches | None = None,
) -> list[torch.Tensor]:
    """Each example's score for each of its candidate answers: the summed log-probability of the
    candidate's tokens after the prompt (no length normalisation).

    When every candidate is one token, distinct within its example, one forward pass of the
    prompts suffices and only those tokens' rows of the output head are used (the scores are then
    logits, which differ from log-probabilities by a constant per example). Otherwise each prompt
    runs once and its candidates are scored from its key/value cache (``_score_after_prompt``).
    """
    pad = backbone.tokenizer.pad_token_id
    weight, bias = output_head(backbone)
    if all(all(len(c) == 1 for c in cs) and len({c[0] for c in cs}) == len(cs) for cs in candidates):
        hidden = hidden_at(backbone, method, prompt_batch(items, pad), lower)
        # Examples differ in candidate count: pad each row's candidate ids and mask the padding out.
        width = max(len(cs) for cs in candidates)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        for i, cs in enumerate(candidates):
            ids[i, : len(cs)] = torch.tensor([c[0] for c in cs])
        ids = ids.to(weight.device)
        scores = torch.einsum("bd,bcd->bc", hidden, weight[ids])
        if bias is not None:
            scores = scores + bias[ids]
        scores = scores.float().cpu()  # decisions and metrics are made on the CPU
        return [scores[i, : len(cs)] for i, cs in enumerate(candidates)]
    # ``lower`` is not used on this path: it holds only the hidden states entering the first prompted
    # layer, while the candidates' tokens need every layer's keys/values of the prompt.
    out: list[torch.Tensor] = []
    for group in _rank_groups(candidates):
        out += _score_after_prompt(backbone, method, [items[i] for i in group], [candidates[i] for i in group])
    return out


def _rank_groups(candidates: list[tuple[tuple[int, ...], ...]]) -> list[list[int]]:
    """Consecutive examples whose candidates make at most RANK_ROWS rows together (an example with
    more candidates than that forms a group alone): the key/value cache is repeated once per row."""
    groups: list[list[int]] = []
    rows = 0
    for i, cs in enumerate(candidates):
        if not groups or rows + len(cs) > RANK_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += len(cs)
    return groups


def _prompt_rows(prompts: LayerPrompts | None, index: torch.Tensor) -> LayerPrompts | None:
    """The deep prompts (and per-example gates) of the examples ``index`` picks, one row per candidate."""
    if prompts is None:
        return None
    gates = prompts.gates
    if gates is not None and gates.dim() == 3:  # (L, B, H): one set per example
        gates = gates[:, index]
    return replace(prompts, prompts=prompts.prompts[:, index], gates=gates)


def _score_after_prompt(
    backbone: Backbone, method: Prompter, items: list[Encoded], candidates: list[tuple[tuple[int, ...], ...]]
) -> list[torch.Tensor]:
    """Summed log-probabilities of each example's candidates: one forward of the left-padded prompts
    fills the key/value cache and scores every candidate's first token; one more forward, with the
    cache's rows repeated per continuation (``_continuations``), scores the remaining tokens of all
    candidates at once.

    The method's prompts are computed once, from the prompts alone (ATTEMPT pools the input, never a
    candidate). Input-level prefixes are in the cache; deep prompts are not (the gated term reads them
    at every step, as do plain mode's prefix keys), so the second forward gets them again, per row.
    """
    pad, dev = backbone.tokenizer.pad_token_id, backbone.device
    model, decoder = backbone.model, backbone.model.get_decoder()
    weight, bias = output_head(backbone)
    task_ids = torch.tensor([e.task_id for e in items], device=dev)
    prompts = method.prompt_inputs(task_ids, batch=prompt_batch(items, pad).to(dev))
    width = max(len(e.prompt) for e in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for r, e in enumerate(items):  # left padding: every prompt ends in the last column, where candidates start
        ids[r, width - len(e.prompt) :] = torch.tensor(e.prompt)
        mask[r, width - len(e.prompt) :] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    embeds = model.get_input_embeddings()(ids)
    if prompts.input_prefix is not None:
        prefix = prompts.input_prefix.to(embeds.dtype)
        embeds, mask = prefix_left_padded(prefix, embeds, mask)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with compute_precision(backbone):
        last = decoder(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            talora_prompts=prompts.layer_prompts,
        ).last_hidden_state[:, -1]
    first = F.linear(last, weight, bias).float().log_softmax(-1).cpu()

    flat = [c for cs in candidates for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(candidates) for _ in cs], dtype=torch.long)
    per_row = torch.zeros(len(flat))
    started = [r for r, c in enumerate(flat) if c]  # an empty candidate scores 0, as a sum over no tokens
    per_row[started] = first[owner[started], [flat[r][0] for r in started]]
    feeds, home = _continuations(candidates)
    if feeds:
        # Each feed is right-padded; padding is masked and, coming after every real token, seen by none of them.
        rest = max(len(f) for _, f in feeds)
        cont = torch.full((len(feeds), rest), pad, dtype=torch.long)
        cont_mask = torch.zeros((len(feeds), rest), dtype=torch.long)
        for r, (_, fed) in enumerate(feeds):
            cont[r, : len(fed)] = torch.tensor(fed)
            cont_mask[r, : len(fed)] = 1
        # Feeds per example differ in number, so the cache's rows are picked by index
        # (batch_repeat_interleave repeats every row equally often).
        on = torch.tensor([i for i, _ in feeds], device=dev)
        cache.reorder_cache(on)
        with compute_precision(backbone):
            hidden = decoder(
                input_ids=cont.to(dev),
                attention_mask=torch.cat([mask[on], cont_mask.to(dev)], dim=1),
                position_ids=positions[on, -1:] + 1 + torch.arange(rest, device=dev),
                past_key_values=cache,
                use_cache=True,
                talora_prompts=_prompt_rows(prompts.layer_prompts, on),
            ).last_hidden_state
        # Only the positions some candidate reads go through the (vocabulary-wide) output head, each once.
        read = sorted({(home[r], j) for r, c in enumerate(flat) if len(c) > 1 for j in range(len(c) - 1)})
        at = {pos: n for n, pos in enumerate(read)}
        picked = hidden[torch.tensor([f for f, _ in read], device=dev), torch.tensor([j for _, j in read], device=dev)]
        logprobs = F.linear(picked, weight, bias).float().log_softmax(-1).cpu()
        rows, index, targets = [], [], []
        for r, c in enumerate(flat):
            for j in range(len(c) - 1):
                rows.append(r)
                index.append(at[home[r], j])
                targets.append(c[j + 1])
        per_row.index_add_(0, torch.tensor(rows), logprobs[torch.tensor(index), torch.tensor(targets)])
    out, start = [], 0
    for cs in candidates:
        out.append(per_row[start : start + len(cs)])
        start += len(cs)
    return out


def _continuations(
    candidates: list[tuple[tuple[int, ...], ...]],
) -> tuple[list[tuple[int, tuple[int, ...]]], list[int]]:
    """What the second forward feeds after each prompt: per example, its candidates less their last token
    (whose prediction is the last one scored), one feed for every such sequence that is not the start of
    a longer one (label words sharing their first tokens share a feed). Returns the feeds as
    (example, tokens) and, per flattened candidate, the index of the feed it reads (-1 for none)."""
    feeds: list[tuple[int, tuple[int, ...]]] = []
    home: list[int] = []
    for i, cs in enumerate(candidates):
        mine: dict[tuple[int, ...], int] = {}
        for fed in sorted({tuple(c[:-1]) for c in cs if len(c) > 1}, key=len, reverse=True):
            longer = next((f for f in mine if f[: len(fed)] == fed), None)
            if longer is None:
                feeds.append((i, fed))
                mine[fed] = len(feeds) - 1
            else:
                mine[fed] = mine[longer]
        home += [mine[tuple(c[:-1])] if len(c) > 1 else -1 for c in cs]
    return feeds, home


@torch.no_grad()
def predict(
    backbone: Backbone,
    method: Prompter,
    items: list[Encoded],
    verbalizers: dict[int, Verbalizer],
    lower: LowerLayerCaches | None = None,
    priors: dict[int, torch.Tensor] | None = None,
) -> list[str | float]:
    """One prediction per example: a label (classification), a choice index as a string (multiple
    choice), a score (regression: the bins' values weighted by the softmax of their scores) or
    generated text (extraction). Candidates are compared as each verbalizer's ``scoring`` says;
    ``priors`` (``label_priors``) are computed here when a calibrated task needs them and none are given."""
    preds: list[str | float] = [""] * len(items)
    ranked = [i for i, e in enumerate(items) if verbalizers[e.task_id].task_kind.ranks]
    if ranked:
        chunk = [items[i] for i in ranked]
        if priors is None:
            priors = label_priors(backbone, method, verbalizers, [e.task_id for e in chunk])
        cands = [verbalizers[e.task_id].candidates(e) for e in chunk]
        scores = score_candidates(backbone, method, chunk, cands, lower)
        for i, e, s, c in zip(ranked, chunk, scores, cands):
            verb = verbalizers[e.task_id]
            preds[i] = verb.decide(verb.adjust(s, c, priors.get(e.task_id)))
    generated = [i for i, e in enumerate(items) if not verbalizers[e.task_id].task_kind.ranks]
    if generated:
        chunk = [items[i] for i in generated]
        texts = generate(backbone, method, chunk, [verbalizers[e.task_id].max_new_tokens for e in chunk])
        for i, text in zip(generated, texts):
            preds[i] = text
    return preds


class GreedyDecoder:
    """Greedy next tokens of a fixed batch of prompts with the method's prompts in place.

    The first step runs the left-padded prompts and fills the key/value cache; each later
    step costs one position per row. Prompt vectors are not in the cache: the gated term
    reads them at every step, like the prefix keys of plain mode. The method's prompts are
    computed once, from the prompts alone (ATTEMPT pools the input, never generated tokens).
    """

    def __init__(self, backbone: Backbone, method: Prompter, rows: list[Encoded]):
        pad, dev = backbone.tokenizer.pad_token_id, backbone.device
        self.backbone, self.model, self.decoder = backbone, backbone.model, backbone.model.get_decoder()
        self.weight, self.bias = output_head(backbone)
        task_ids = torch.tensor([e.task_id for e in rows], device=dev)
        self.prompts = method.prompt_inputs(task_ids, batch=prompt_batch(rows, pad).to(dev))
        width = max(len(e.prompt) for e in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, e in enumerate(rows):  # left padding: every row's next token lands in the same column
            ids[r, width - len(e.prompt) :] = torch.tensor(e.prompt)
            mask[r, width - len(e.prompt) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        embeds = self.model.get_input_embeddings()(ids)
        if self.prompts.input_prefix is not None:
            prefix = self.prompts.input_prefix.to(embeds.dtype)
            embeds, mask = prefix_left_padded(prefix, embeds, mask)
        self.mask, self.positions = mask, (mask.cumsum(1) - 1).clamp(min=0)
        self.inputs = {"inputs_embeds": embeds}
        self.cache = DynamicCache(config=self.model.config)

    @torch.no_grad()
    def step(self) -> list[int]:
        with compute_precision(self.backbone):
            hidden = self.decoder(
                **self.inputs,
                attention_mask=self.mask,
                position_ids=self.positions,
                past_key_values=self.cache,
                use_cache=True,
                talora_prompts=self.prompts.layer_prompts,
            ).last_hidden_state[:, -1]
        next_ids = F.linear(hidden, self.weight, self.bias).argmax(-1)
        self.inputs = {"input_ids": next_ids[:, None]}
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(next_ids), 1)], dim=1)
        self.positions = self.positions[:, -1:] + 1
        return next_ids.tolist()


@torch.no_grad()
def generate(backbone: Backbone, method: Prompter, items: list[Encoded], max_new_tokens: int | list[int]) -> list[str]:
    """Greedy continuation of each prompt with the method's prompts in place, up to the first newline
    (the answer's end in training), the end-of-sequence token or ``max_new_tokens`` (one budget, or
    one per example). Returns the text before the newline, stripped. Rows that finish early keep
    stepping with the batch (their tokens are ignored) until every row is done."""
    tokenizer = backbone.tokenizer
    eos = tokenizer.eos_token_id
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(items)
    out: list[list[int]] = [[] for _ in items]
    todo = [i for i, n in enumerate(limits) if n > 0]
    decoder = GreedyDecoder(backbone, method, [items[i] for i in todo]) if todo else None
    live = list(range(len(todo)))
    while live:
        next_ids = decoder.step()
        still = []
        for r in live:
            token, i = next_ids[r], todo[r]
            if token == eos:
                continue
            out[i].append(token)
            if STOP not in tokenizer.decode(out[i]) and len(out[i]) < limits[i]:
                still.append(r)
        live = still
    return [tokenizer.decode(ids).split(STOP, 1)[0].strip() for ids in out]


@torch.no_grad()
def predictions(
    backbone: Backbone,
    method: Prompter,
    items: list[Encoded],
    verbalizers: dict[int, Verbalizer],
    batch_size: int = 32,
    lower: LowerLayerCaches | None = None,
) -> list[str | float]:
    """``predict`` over many examples in batches, in the order of ``items``. Under a data-parallel
    launch each rank predicts its share and every rank gets every prediction."""
    if not items:
        raise DataError("nothing to evaluate: the evaluation split is empty")
    w = world()
    # Generated answers batch apart from ranked ones (a lone generated row would run every step alone);
    # within each, similar lengths batch together (less padding).
    order = sorted(
        range(len(items)), key=lambda i: (not verbalizers[items[i].task_id].task_kind.ranks, len(items[i].prompt))
    )
    order = w.shard(order)
    preds: dict[int, str | float] = {}
    with method.applied(backbone), progress(total=len(order), desc="evaluate") as bar:
        # Calibration's label priors depend on the method, not on the batch: computed once.
        priors = label_priors(backbone, method, verbalizers, [e.task_id for e in items])
        for start in range(0, len(order), batch_size):
            bar.update(min(batch_size, len(order) - start))
            chunk = [items[i] for i in order[start : start + batch_size]]
            batch_preds = predict(backbone, method, chunk, verbalizers, lower, priors)
            for i, p in zip(order[start : start + batch_size], batch_preds):
                preds[i] = p
    preds = dict(w.gather(list(preds.items()))) if w.parallel else preds
    return [preds[i] for i in range(len(items))]


def task_metrics(
    items: list[Encoded], preds: list[str | float], verbalizers: dict[int, Verbalizer], names: list[str]
) -> dict[str, dict[str, float]]:
    """Per-task metrics of predictions (one per item, in order); ``names[task_id]`` names each task."""
    results = {}
    for task_id in sorted({e.task_id for e in items}):
        idx = [i for i, e in enumerate(items) if e.task_id == task_id]
        results[names[task_id]] = compute_metrics(
            verbalizers[task_id],
            [preds[i] for i in idx],
            [items[i].golds or (items[i].label,) for i in idx],
            [question_of(items[i].uid) for i in idx],
        )
    return results


@torch.no_grad()
def evaluate(
    backbone: Backbone,
    method: Prompter,
    items: list[Encoded],
    verbalizers: dict[int, Verbalizer],
    batch_size: int = 32,
    lower: LowerLayerCaches | None = None,
) -> dict[str, dict[str, float]]:
    """Per-task metrics over ``items`` (tasks and kinds may be mixed); each task's dict holds its
    headline metric under the metric's name, beside the related scores (talora/tasks/metrics.py)."""
    preds = predictions(backbone, method, items, verbalizers, batch_size, lower)
    return task_metrics(items, preds, verbalizers, method.task_names)


def headline(results: dict[str, dict[str, float]], metrics: dict[str, str]) -> float:
    """Mean over tasks of each task's headline metric: the model-selection score."""
    return float(np.mean([results[t][metrics[t]] for t in results]))
