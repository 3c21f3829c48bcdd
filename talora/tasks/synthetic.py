"""The embedded synthetic suite: ten small English classification tasks generated from word lists
(talora/tasks/synthetic.json).

Sources and targets come in families, so a target shares a skill with some source but differs in
template, label words, vocabulary or label set, which is what transfer between tasks should exploit.
All cues are lexical on purpose, so that a 135M-parameter model learns them quickly.

| task | role | labels -> words | shared with | what differs |
|---|---|---|---|---|
| movie_sentiment | source | positive, negative | product_sentiment | film vocabulary, "Review:/Sentiment:" |
| news_topic | source | sports, politics, science, business | headline_topic | full sentences, 4 topics |
| question_match | source | yes, no | paraphrase_pair | how-to questions; "no" = other object |
| hypernym_entailment | source | yes, no | question_match | "a dog" -> "an animal"; "no" = other category or "not" |
| emotion | source | joy, anger, fear, sadness | tweet_emotion | third-person sentences, 4 emotions |
| word_category | source | animal, object | hypernym_entailment (nouns) | short "adjective noun" phrases |
| product_sentiment | target | good, bad | movie_sentiment | product vocabulary, words " good"/" bad" |
| headline_topic | target | sports, business, science | news_topic | headlines, no politics, "Section:" |
| paraphrase_pair | target | same, different | question_match | statements; "different" = other object or person |
| tweet_emotion | target | joy, anger, sadness | emotion | first-person tweets, no fear, "Feeling:" |

Every split is label-balanced (class counts differ by at most one) and no rendered prompt occurs twice
within a task, so train, validation and test are disjoint. Generation is seeded per task with
``random.Random("<suite seed>:<task>")`` (SHA-512 of the string), independent of PYTHONHASHSEED.

Measured once with plain prompt tuning on SmolLM2-135M-Instruct (10 input vectors, Adam lr 0.03,
batch 16, validation accuracy): the single-text tasks reach 0.97-1.00 within 40 steps (news_topic,
headline_topic and tweet_emotion are near that zero-shot); the pair tasks learn more slowly:
question_match 0.75 and paraphrase_pair 0.80 after 40 steps, hypernym_entailment 0.51 after 40 and
0.79 after 160 (the model hardly knows is-a relations unprompted, hence the negation half of "no").
Those figures came from a one-off script, not kept; the in-repo way to re-measure one task is
``talora train --config C.yaml --method prompt_tuning --output DIR`` with ``tasks: [NAME]``,
``method_args: {length: 10}`` and ``train: {steps: 40, batch_size: 16, eval_every: 0}`` in C.yaml.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import Example, Task, TaskSpec

SUITE_SEED = 2024
DEFAULT_SIZES = {"train": 400, "validation": 100, "test": 100}
# The word lists every generator draws from, by name. Examples are seeded draws by position, so
# reordering or editing a list changes the tasks that use it.
WORDS_FILE = Path(__file__).with_name("synthetic.json")
Words = Mapping[str, Any]


def read_words() -> Words:
    """The word lists, read afresh: each ``generate`` reads them once (no module-level cache)."""
    return json.loads(WORDS_FILE.read_text(encoding="utf-8"))


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# ------------------------------------------------------------------ sentiment
def movie_review(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    part, other = rng.sample(w["film_parts"], 2)
    adj, adj2 = rng.sample(w["film_adj"][label], 2)
    text = rng.choice(
        (
            f"The {part} was {adj}.",
            f"I thought the {part} was {adj}.",
            f"The {part} was {adj} and the {other} was {adj2}.",
            f"Honestly, the {part} was {adj}, and the {other} felt {adj2} too.",
        )
    )
    return {"text": text}


def product_review(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    product, phrase = rng.choice(w["products"]), rng.choice(w["product_phrases"][label])
    opening = rng.choice((f"This {product}", f"The {product} I ordered", f"My new {product}"))
    return {"text": f"{opening} {phrase}.{rng.choice(w['product_tails'][label])}"}


# ------------------------------------------------------------------ topic
def news_article(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    # news: topic -> (subjects, past-tense verbs, objects)
    subjects, verbs, objects = w["news"][label]
    return {"text": f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(w['times'])}."}


def headline(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    # headlines: topic -> (subjects, present-tense verbs agreeing with them, objects)
    subjects, verbs, objects = w["headlines"][label]
    prefix = rng.choice(("", "BREAKING: ", "Update: ", "Report: "))
    suffix = rng.choice(("", " in surprise move", " after long wait", " this weekend"))
    return {"text": f"{prefix}{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{suffix}"}


# ------------------------------------------------------------------ matching
def question_pair(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    verbs, (frame_a, frame_b) = rng.choice(w["verb_synonyms"]), rng.sample(w["question_frames"], 2)
    verb_a, verb_b = rng.sample(verbs, 2)
    thing_a, other = rng.sample(w["things"], 2)
    thing_b = thing_a if label == "yes" else other
    return {
        "text_a": frame_a.format(v=verb_a, o=article(thing_a)),
        "text_b": frame_b.format(v=verb_b, o=article(thing_b)),
    }


def paraphrase(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    verb_a, verb_b = rng.sample(rng.choice(w["past_synonyms"]), 2)
    name, other_name = rng.sample(w["names"], 2)
    thing, other_thing = rng.sample(w["things"], 2)
    when = rng.choice(w["times"])
    name_b, thing_b = name, thing
    if label == "different":
        if rng.random() < 0.5:
            thing_b = other_thing
        else:
            name_b = other_name
    return {
        "text_a": f"{name} {verb_a} {article(thing)} {when}.",
        "text_b": f"{name_b} {verb_b} {article(thing_b)} {when}.",
    }


def hypernym_pair(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    # "no" is half a wrong category, half a negation: 135M models barely know is-a relations
    # unprompted, and the negation half keeps the task learnable within a few dozen steps.
    # categories: hypernym (with article) -> hyponyms, in disjoint groups so that a wrong hypernym is
    # wrong; scenes: (statement, its negation).
    right, wrong = rng.sample(sorted(w["categories"]), 2)
    (scene, negated), name, when = rng.choice(w["scenes"]), rng.choice(w["names"]), rng.choice(w["times"])
    premise = scene.format(n=name, x=article(rng.choice(w["categories"][right])), t=when)
    if label == "yes":
        hypothesis = scene.format(n=name, x=right, t=when)
    elif rng.random() < 0.5:
        hypothesis = negated.format(n=name, x=right, t=when)
    else:
        hypothesis = scene.format(n=name, x=wrong, t=when)
    return {"text_a": premise, "text_b": hypothesis}


def category_phrase(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    noun = rng.choice(w["animals"] if label == "animal" else w["objects"])
    return {"text": f"{rng.choice(('a', 'the', 'one'))} {rng.choice(w['plain_adj'])} {noun}"}


# ------------------------------------------------------------------ emotion
def emotion_sentence(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    name, feeling, event = rng.choice(w["names"]), rng.choice(w["feelings"][label]), rng.choice(w["events"])
    text = rng.choice(
        (
            f"{name} felt {feeling} when {event}.",
            f"When {event}, {name} was {feeling}.",
            f"{name} was {feeling} {rng.choice(w['times'])}.",
        )
    )
    return {"text": text}


def tweet(rng: random.Random, label: str, w: Words) -> dict[str, str]:
    opener = rng.choice(("", "honestly ", "well ", "today "))
    tag = rng.choice(("", " #life", " #today", " #mood"))
    event, feeling = rng.choice(w["tweet_events"][label]), rng.choice(w["tweet_feelings"][label])
    return {"text": f"{opener}{event}, so {feeling} right now{tag}"}


# ------------------------------------------------------------------ the suite
def _spec(name: str, role: str, words: Sequence[str], template: str) -> TaskSpec:
    """Labels are the words themselves: every label word is a single common English word."""
    return TaskSpec(
        name=name,
        language="en",
        kind="classification",
        labels=tuple(words),
        label_words={w: " " + w for w in words},
        template=template,
        metric="accuracy",
        role=role,
    )


Generator = Callable[[random.Random, str, Words], Mapping[str, str]]
SUITE: dict[str, tuple[TaskSpec, Generator]] = {
    spec.name: (spec, make)
    for spec, make in (
        (_spec("movie_sentiment", "source", ("positive", "negative"), "Review: {text}\nSentiment:"), movie_review),
        (
            _spec("news_topic", "source", ("sports", "politics", "science", "business"), "Article: {text}\nTopic:"),
            news_article,
        ),
        (
            _spec(
                "question_match", "source", ("yes", "no"), "Question 1: {text_a}\nQuestion 2: {text_b}\nSame question?"
            ),
            question_pair,
        ),
        (
            _spec(
                "hypernym_entailment",
                "source",
                ("yes", "no"),
                "Premise: {text_a}\nHypothesis: {text_b}\nIs the hypothesis true?",
            ),
            hypernym_pair,
        ),
        (
            _spec("emotion", "source", ("joy", "anger", "fear", "sadness"), "Sentence: {text}\nEmotion:"),
            emotion_sentence,
        ),
        (_spec("word_category", "source", ("animal", "object"), "Phrase: {text}\nCategory:"), category_phrase),
        (_spec("product_sentiment", "target", ("good", "bad"), "Product review: {text}\nVerdict:"), product_review),
        (_spec("headline_topic", "target", ("sports", "business", "science"), "Headline: {text}\nSection:"), headline),
        (
            _spec("paraphrase_pair", "target", ("same", "different"), "First: {text_a}\nSecond: {text_b}\nMeaning:"),
            paraphrase,
        ),
        (_spec("tweet_emotion", "target", ("joy", "anger", "sadness"), "Tweet: {text}\nFeeling:"), tweet),
    )
}
SYNTHETIC_SOURCE_TASKS = tuple(n for n, (s, _) in SUITE.items() if s.role == "source")
SYNTHETIC_TARGET_TASKS = tuple(n for n, (s, _) in SUITE.items() if s.role == "target")


def generate(name: str, sizes: Mapping[str, int] | None = None, seed: int = SUITE_SEED) -> Task:
    if name not in SUITE:
        raise DataError(f"no synthetic task {name!r}; the suite has: {', '.join(SUITE)}")
    spec, make = SUITE[name]
    rng = random.Random(f"{seed}:{name}")
    words = read_words()
    seen: set[str] = set()
    splits = {}
    for split, size in (sizes or DEFAULT_SIZES).items():
        drawn = []
        for i in range(size):
            label = spec.labels[i % len(spec.labels)]
            for _ in range(1000):
                fields = make(rng, label, words)
                prompt = spec.render(fields, f"{name}-{split}-{i}")
                if prompt not in seen:
                    break
            else:
                raise DataError(f"synthetic task {name!r}: word lists too small for {size} {split} examples")
            seen.add(prompt)
            drawn.append((label, fields))
        rng.shuffle(drawn)
        splits[split] = [Example(f"{name}/{split}/{i}", name, fields, label) for i, (label, fields) in enumerate(drawn)]
    return Task(spec, splits)


def load(names: Sequence[str] | None = None) -> dict[str, Task]:
    return {name: generate(name) for name in (names if names is not None else SUITE)}


def describe() -> list[dict]:
    return [
        {
            "name": n,
            "language": s.language,
            "kind": s.kind,
            "role": s.role,
            "metric": s.metric,
            "labels": list(s.labels),
            "splits": dict(DEFAULT_SIZES),
            "path": f"synthetic/{n}",
            "supported": True,
        }
        for n, (s, _) in SUITE.items()
    ]
