"""The embedded synthetic suite: ten small English classification tasks generated from word lists.

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

import random
from collections.abc import Callable, Mapping, Sequence

from ..errors import DataError
from .base import Example, Task, TaskSpec

SUITE_SEED = 2024
DEFAULT_SIZES = {"train": 400, "validation": 100, "test": 100}

NAMES = (
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "Jack",
    "Kate",
    "Leo",
    "Maria",
    "Nick",
    "Olivia",
    "Paul",
    "Rosa",
    "Sam",
    "Tina",
    "Victor",
)
TIMES = ("yesterday", "last week", "on Monday", "this morning", "on Friday", "last night", "today", "over the weekend")


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# ------------------------------------------------------------------ sentiment
FILM_PARTS = (
    "plot",
    "acting",
    "script",
    "soundtrack",
    "ending",
    "cast",
    "dialogue",
    "story",
    "camera work",
    "pacing",
    "film",
    "movie",
    "sequel",
    "lead performance",
    "final scene",
)
FILM_ADJ = {
    "positive": (
        "wonderful",
        "brilliant",
        "moving",
        "superb",
        "delightful",
        "gripping",
        "charming",
        "excellent",
        "beautiful",
        "hilarious",
        "touching",
        "fantastic",
        "clever",
        "stunning",
    ),
    "negative": (
        "boring",
        "awful",
        "dull",
        "terrible",
        "messy",
        "predictable",
        "painful",
        "weak",
        "clumsy",
        "lifeless",
        "tedious",
        "dreadful",
        "silly",
        "bland",
    ),
}


def movie_review(rng: random.Random, label: str) -> dict[str, str]:
    part, other = rng.sample(FILM_PARTS, 2)
    adj, adj2 = rng.sample(FILM_ADJ[label], 2)
    text = rng.choice(
        (
            f"The {part} was {adj}.",
            f"I thought the {part} was {adj}.",
            f"The {part} was {adj} and the {other} was {adj2}.",
            f"Honestly, the {part} was {adj}, and the {other} felt {adj2} too.",
        )
    )
    return {"text": text}


PRODUCTS = (
    "phone",
    "blender",
    "vacuum cleaner",
    "pair of headphones",
    "kettle",
    "backpack",
    "keyboard",
    "charger",
    "mattress",
    "toaster",
    "desk lamp",
    "printer",
    "speaker",
    "drill",
    "watch",
)
PRODUCT_PHRASES = {
    "good": (
        "works perfectly",
        "is sturdy and reliable",
        "arrived quickly and works great",
        "exceeded my expectations",
        "is worth every penny",
        "feels solid",
        "is easy to use",
        "still runs like new",
        "does exactly what it promises",
    ),
    "bad": (
        "broke after a week",
        "stopped working",
        "feels cheap and flimsy",
        "arrived damaged",
        "is a waste of money",
        "is far too noisy",
        "keeps overheating",
        "fell apart",
        "never worked properly",
    ),
}
PRODUCT_TAILS = {
    "good": ("", " Five stars.", " Highly recommended.", " I love it.", " Would buy again."),
    "bad": ("", " One star.", " Do not buy.", " Very disappointed.", " I want a refund."),
}


def product_review(rng: random.Random, label: str) -> dict[str, str]:
    product, phrase = rng.choice(PRODUCTS), rng.choice(PRODUCT_PHRASES[label])
    opening = rng.choice((f"This {product}", f"The {product} I ordered", f"My new {product}"))
    return {"text": f"{opening} {phrase}.{rng.choice(PRODUCT_TAILS[label])}"}


# ------------------------------------------------------------------ topic
NEWS = {  # topic -> (subjects, past-tense verbs, objects)
    "sports": (
        (
            "The coach",
            "The striker",
            "The home team",
            "The goalkeeper",
            "The captain",
            "The tennis star",
            "The young sprinter",
            "The league champions",
        ),
        ("won", "lost", "celebrated", "played", "trained for", "prepared for"),
        (
            "the final match",
            "the championship",
            "the derby",
            "the title race",
            "the cup game",
            "the marathon",
            "the season opener",
        ),
    ),
    "politics": (
        (
            "The senator",
            "The prime minister",
            "The parliament",
            "The governor",
            "The opposition party",
            "The mayor",
            "The president",
            "The cabinet",
        ),
        ("debated", "voted on", "announced", "rejected", "proposed", "signed"),
        (
            "a new tax law",
            "the election reform",
            "the budget bill",
            "a peace treaty",
            "the immigration policy",
            "the referendum",
            "the new constitution",
        ),
    ),
    "science": (
        (
            "The researchers",
            "The biologist",
            "The physics lab",
            "The astronomers",
            "The chemist",
            "The space agency",
            "The university team",
            "The geologists",
        ),
        ("discovered", "published", "studied", "measured", "tested", "observed"),
        (
            "a new species of frog",
            "a distant galaxy",
            "the quantum experiment",
            "a cancer vaccine",
            "the DNA sequence",
            "a comet",
            "the climate data",
        ),
    ),
    "business": (
        (
            "The company",
            "The bank",
            "The startup",
            "The investors",
            "The retailer",
            "The chief executive",
            "The shareholders",
            "The car maker",
        ),
        ("reported", "announced", "cut", "raised", "approved", "celebrated"),
        (
            "record quarterly profits",
            "its stock price",
            "a merger deal",
            "the sales forecast",
            "a new factory",
            "the dividend",
            "the annual revenue",
        ),
    ),
}


def news_article(rng: random.Random, label: str) -> dict[str, str]:
    subjects, verbs, objects = NEWS[label]
    return {"text": f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(TIMES)}."}


HEADLINES = {  # topic -> (subjects, present-tense verbs agreeing with them, objects)
    "sports": (
        (
            "Striker",
            "Goalkeeper",
            "Olympic sprinter",
            "Tennis champion",
            "Home team",
            "Veteran boxer",
            "Rookie pitcher",
            "Cycling star",
        ),
        ("wins", "loses", "clinches", "misses", "dominates"),
        ("cup final", "league title", "gold medal", "season opener", "derby match", "grand slam", "world championship"),
    ),
    "business": (
        (
            "Tech giant",
            "Local bank",
            "Car maker",
            "Retail chain",
            "Oil company",
            "Startup",
            "Airline",
            "Investment firm",
        ),
        ("posts", "reports", "cuts", "announces", "doubles"),
        (
            "record profits",
            "quarterly earnings",
            "hundreds of jobs",
            "merger deal",
            "share buyback",
            "price hike",
            "sales forecast",
        ),
    ),
    "science": (
        (
            "Astronomers",
            "Biologists",
            "Physicists",
            "Geologists",
            "Researchers",
            "Chemists",
            "Climate scientists",
            "Space engineers",
        ),
        ("find", "map", "detect", "confirm", "reveal"),
        (
            "new planet",
            "ancient fossil",
            "gene mutation",
            "black hole",
            "deep sea species",
            "new element",
            "ice age evidence",
        ),
    ),
}


def headline(rng: random.Random, label: str) -> dict[str, str]:
    subjects, verbs, objects = HEADLINES[label]
    prefix = rng.choice(("", "BREAKING: ", "Update: ", "Report: "))
    suffix = rng.choice(("", " in surprise move", " after long wait", " this weekend"))
    return {"text": f"{prefix}{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{suffix}"}


# ------------------------------------------------------------------ matching
VERB_SYNONYMS = (
    ("fix", "repair"),
    ("buy", "purchase"),
    ("clean", "wash"),
    ("find", "locate"),
    ("choose", "pick"),
    ("get", "obtain"),
    ("assemble", "put together"),
    ("protect", "look after"),
)
THINGS = (
    "bike",
    "laptop",
    "car",
    "phone",
    "sofa",
    "kitchen sink",
    "garden fence",
    "printer",
    "coffee machine",
    "washing machine",
    "camera",
    "guitar",
    "tent",
    "watch",
    "jacket",
    "carpet",
)
QUESTION_FRAMES = (
    "How do I {v} {o}?",
    "What is the best way to {v} {o}?",
    "Where can I {v} {o}?",
    "How can I {v} {o} quickly?",
    "Is it hard to {v} {o}?",
)


def question_pair(rng: random.Random, label: str) -> dict[str, str]:
    verbs, (frame_a, frame_b) = rng.choice(VERB_SYNONYMS), rng.sample(QUESTION_FRAMES, 2)
    verb_a, verb_b = rng.sample(verbs, 2)
    thing_a, other = rng.sample(THINGS, 2)
    thing_b = thing_a if label == "yes" else other
    return {
        "text_a": frame_a.format(v=verb_a, o=article(thing_a)),
        "text_b": frame_b.format(v=verb_b, o=article(thing_b)),
    }


PAST_SYNONYMS = (
    ("bought", "purchased"),
    ("fixed", "repaired"),
    ("cleaned", "washed"),
    ("found", "located"),
    ("chose", "picked"),
    ("built", "constructed"),
    ("received", "got"),
    ("lost", "misplaced"),
    ("sold", "got rid of"),
)


def paraphrase(rng: random.Random, label: str) -> dict[str, str]:
    verb_a, verb_b = rng.sample(rng.choice(PAST_SYNONYMS), 2)
    name, other_name = rng.sample(NAMES, 2)
    thing, other_thing = rng.sample(THINGS, 2)
    when = rng.choice(TIMES)
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


CATEGORIES = {  # hypernym (with article) -> hyponyms; the groups are disjoint so a wrong hypernym is wrong
    "an animal": ("dog", "cat", "horse", "rabbit", "lion", "tiger", "cow", "sheep", "fox", "bear", "wolf"),
    "a vehicle": ("car", "bus", "truck", "bicycle", "motorcycle", "train", "van", "taxi", "tractor"),
    "a fruit": ("apple", "banana", "orange", "pear", "mango", "peach", "cherry", "lemon", "plum"),
    "a musical instrument": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello"),
    "a tool": ("hammer", "axe", "wrench", "drill", "screwdriver", "shovel", "chisel"),
    "a flower": ("rose", "tulip", "daisy", "lily", "sunflower", "orchid", "poppy"),
    "a piece of furniture": ("chair", "table", "sofa", "bed", "desk", "shelf", "wardrobe"),
}
SCENES = (  # (statement, its negation)
    ("{n} saw {x} in the park.", "{n} did not see {x} in the park."),
    ("{n} drew {x} {t}.", "{n} did not draw {x} {t}."),
    ("{n} talked about {x} {t}.", "{n} never talked about {x} {t}."),
    ("There was {x} near the house.", "There was not {x} near the house."),
    ("{n} took a photo of {x} {t}.", "{n} did not take a photo of {x} {t}."),
    ("{n} dreamed about {x}.", "{n} never dreamed about {x}."),
)


def hypernym_pair(rng: random.Random, label: str) -> dict[str, str]:
    # "no" is half a wrong category, half a negation: 135M models barely know is-a relations
    # unprompted, and the negation half keeps the task learnable within a few dozen steps.
    right, wrong = rng.sample(sorted(CATEGORIES), 2)
    (scene, negated), name, when = rng.choice(SCENES), rng.choice(NAMES), rng.choice(TIMES)
    premise = scene.format(n=name, x=article(rng.choice(CATEGORIES[right])), t=when)
    if label == "yes":
        hypothesis = scene.format(n=name, x=right, t=when)
    elif rng.random() < 0.5:
        hypothesis = negated.format(n=name, x=right, t=when)
    else:
        hypothesis = scene.format(n=name, x=wrong, t=when)
    return {"text_a": premise, "text_b": hypothesis}


ANIMALS = (
    "dog",
    "cat",
    "horse",
    "rabbit",
    "lion",
    "tiger",
    "cow",
    "sheep",
    "fox",
    "bear",
    "wolf",
    "deer",
    "goat",
    "mouse",
    "elephant",
    "monkey",
    "zebra",
    "giraffe",
    "donkey",
    "camel",
    "owl",
    "duck",
    "eagle",
    "frog",
    "turtle",
    "snake",
    "squirrel",
    "hamster",
    "parrot",
    "penguin",
)
OBJECTS = (
    "chair",
    "table",
    "lamp",
    "cup",
    "bottle",
    "spoon",
    "book",
    "pencil",
    "clock",
    "hammer",
    "bucket",
    "pillow",
    "mirror",
    "basket",
    "umbrella",
    "kettle",
    "candle",
    "key",
    "plate",
    "shoe",
    "hat",
    "box",
    "bowl",
    "brush",
    "blanket",
    "ladder",
    "rope",
    "jar",
    "wallet",
    "backpack",
)
PLAIN_ADJ = (
    "small",
    "big",
    "old",
    "brown",
    "white",
    "black",
    "grey",
    "tiny",
    "huge",
    "lovely",
    "dirty",
    "strange",
    "pretty",
    "ugly",
    "heavy",
    "ordinary",
)


def category_phrase(rng: random.Random, label: str) -> dict[str, str]:
    noun = rng.choice(ANIMALS if label == "animal" else OBJECTS)
    return {"text": f"{rng.choice(('a', 'the', 'one'))} {rng.choice(PLAIN_ADJ)} {noun}"}


# ------------------------------------------------------------------ emotion
FEELINGS = {
    "joy": ("happy", "delighted", "thrilled", "cheerful", "overjoyed", "glad", "elated"),
    "anger": ("angry", "furious", "annoyed", "outraged", "irritated", "livid", "enraged"),
    "fear": ("scared", "terrified", "afraid", "frightened", "nervous", "panicked", "alarmed"),
    "sadness": ("sad", "heartbroken", "miserable", "gloomy", "sorrowful", "devastated", "unhappy"),
}
EVENTS = (
    "the letter arrived",
    "the phone rang",
    "the train stopped",
    "the door opened",
    "the results came out",
    "the meeting ended",
    "the lights went out",
    "the news was announced",
    "the guests left",
    "the storm began",
)


def emotion_sentence(rng: random.Random, label: str) -> dict[str, str]:
    name, feeling, event = rng.choice(NAMES), rng.choice(FEELINGS[label]), rng.choice(EVENTS)
    text = rng.choice(
        (
            f"{name} felt {feeling} when {event}.",
            f"When {event}, {name} was {feeling}.",
            f"{name} was {feeling} {rng.choice(TIMES)}.",
        )
    )
    return {"text": text}


TWEET_EVENTS = {
    "joy": (
        "just got the job",
        "my sister had a baby",
        "finally on vacation",
        "passed my driving test",
        "my team won the final",
    ),
    "anger": (
        "the bus skipped my stop again",
        "someone stole my parking spot",
        "my landlord raised the rent",
        "customer service hung up on me",
        "my neighbour woke me up at 5am",
    ),
    "sadness": (
        "my cat passed away",
        "missing my grandma today",
        "my best friend moved away",
        "the concert got cancelled",
        "nobody came to my party",
    ),
}
TWEET_FEELINGS = {
    "joy": ("happy", "excited", "thrilled", "over the moon"),
    "anger": ("angry", "furious", "fuming", "annoyed"),
    "sadness": ("sad", "heartbroken", "crushed", "lonely"),
}


def tweet(rng: random.Random, label: str) -> dict[str, str]:
    opener = rng.choice(("", "honestly ", "well ", "today "))
    tag = rng.choice(("", " #life", " #today", " #mood"))
    return {"text": f"{opener}{rng.choice(TWEET_EVENTS[label])}, so {rng.choice(TWEET_FEELINGS[label])} right now{tag}"}


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


Generator = Callable[[random.Random, str], Mapping[str, str]]
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
    seen: set[str] = set()
    splits = {}
    for split, size in (sizes or DEFAULT_SIZES).items():
        drawn = []
        for i in range(size):
            label = spec.labels[i % len(spec.labels)]
            for _ in range(1000):
                fields = make(rng, label)
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
