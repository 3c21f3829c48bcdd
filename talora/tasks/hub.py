"""The same tasks from the Hugging Face hub, written as a data folder in the shared layout.

``HUB`` maps a task to its usual hub dataset (id, config, split names) and a pure conversion of one
hub row into the JSONL record the local files use (``records`` applies it to a split; MultiRC's rows,
one per candidate answer, are grouped back into one record per question). ``download`` (the command
``talora data pull``) writes ``<out>/<lang>/<task>/<split>.jsonl`` and a ``MANIFEST.json``, so the
result is used like any data folder (``--data-dir``); ``fetch_rows`` is its one call to the network.
Rows without a gold label (the hidden GLUE/CLUE test labels, -1) are skipped.

Tasks with no usual hub dataset (online_shopping, thucnews, chnsenticorp, lcqmc, bq, sanwen, finre,
cote_bd, cote_mfw) are not listed: use the local copies. The hub's splits are the official ones,
so they differ from the local folder's where that one had to derive or sample its splits.

Downloading needs the optional ``datasets`` package: ``pip install 'talora[hub]'`` (or ``pip install
datasets``); nothing else in talora imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError

Row = Mapping
Record = dict


@dataclass(frozen=True)
class HubSource:
    dataset: str
    config: str | None
    splits: Mapping[str, str]  # local split -> hub split
    convert: Callable[[Row], Record | None]  # one hub row -> one local record (None: no gold label)
    # What the manifest needs to load the task: its language, type, metric and label list.
    language: str
    type: str
    metric: str
    label_list: tuple[str, ...] | None = None
    grouped: bool = False  # convert takes the rows of one question (MultiRC)


def renaming(fields: Mapping[str, str], label_names: Sequence[str] | None) -> Callable[[Row], Record | None]:
    """A conversion that renames fields (hub name -> local name) and maps a class index to its name
    (``label_names`` None: the label is kept as it is, e.g. STS-B's float score)."""

    def convert(row: Row) -> Record | None:
        label = row["label"]
        if label_names is not None:
            if label < 0:
                return None
            label = label_names[label]
        elif label < 0:
            return None
        return {**{local: row[hub] for hub, local in fields.items()}, "label": label}

    return convert


SENTENCE = {"sentence": "text"}
GLUE_PAIR = {"sentence1": "text_a", "sentence2": "text_b"}
NLI_PAIR = {"premise": "text_a", "hypothesis": "text_b"}
NLI3 = ("entailment", "neutral", "contradiction")
CLUE_NLI3 = ("neutral", "entailment", "contradiction")
BINARY = ("false", "true")
TRAIN_VAL = {"train": "train", "validation": "validation"}
# CLUE's TNEWS class index -> code -> the label name the local files use.
TNEWS_CODES = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115", "116")
TNEWS_NAMES = {
    "100": "news_story",
    "101": "news_culture",
    "102": "news_entertainment",
    "103": "news_sports",
    "104": "news_finance",
    "106": "news_house",
    "107": "news_car",
    "108": "news_edu",
    "109": "news_tech",
    "110": "news_military",
    "112": "news_travel",
    "113": "news_world",
    "114": "news_stock",
    "115": "news_agriculture",
    "116": "news_game",
}
TREC_COARSE = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")
DBPEDIA = (
    "Company",
    "EducationalInstitution",
    "Artist",
    "Athlete",
    "OfficeHolder",
    "MeanOfTransportation",
    "Building",
    "NaturalPlace",
    "Village",
    "Animal",
    "Plant",
    "Album",
    "Film",
    "WrittenWork",
)


def squad_record(row: Row) -> Record:
    answers = row["answers"]
    return {
        "id": row["id"],
        "context": row["context"],
        "question": row["question"],
        "answers": [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])],
    }


def c3_record(row: Row) -> Record | None:
    if row["answer"] not in row["choice"]:
        return None
    return {
        "context": "\n".join(row["context"]),
        "question": row["question"],
        "choices": list(row["choice"]),
        "label": list(row["choice"]).index(row["answer"]),
    }


def tnews_record(row: Row) -> Record | None:
    if row["label"] < 0:
        return None
    return {"text": row["sentence"], "label": TNEWS_NAMES[TNEWS_CODES[row["label"]]]}


def wic_record(row: Row) -> Record:
    return {
        "word": row["word"],
        "text_a": row["sentence1"],
        "text_b": row["sentence2"],
        "label": BINARY[row["label"]],
        **{k: row[k] for k in ("start1", "end1", "start2", "end2")},
    }


def wsc_record(row: Row) -> Record:
    return {
        **{k: row[k] for k in ("text", "span1_text", "span1_index", "span2_text", "span2_index")},
        "label": BINARY[row["label"]],
    }


def scitail_record(row: Row) -> Record:
    return {
        "text_a": row["premise"],
        "text_b": row["hypothesis"],
        "label": "entailment" if row["label"] == "entails" else "not_entailment",
    }


def trec_record(row: Row) -> Record:
    return {"text": row["text"], "label": TREC_COARSE[row["coarse_label"]]}


def dbpedia_record(row: Row) -> Record:
    return {"text": row["content"].strip(), "label": DBPEDIA[row["label"]]}


def multirc_record(rows: Sequence[Row]) -> Record:
    """One question: its candidate answers' rows (super_glue/multirc has one row per candidate)."""
    first = rows[0]
    return {
        "context": first["paragraph"],
        "question": first["question"],
        "answers": [{"text": r["answer"], "label": BINARY[r["label"]], "answer_idx": r["idx"]["answer"]} for r in rows],
        "paragraph_idx": first["idx"]["paragraph"],
        "question_idx": first["idx"]["question"],
    }


def _pair(
    dataset,
    config,
    fields,
    labels,
    splits=TRAIN_VAL,
    *,
    language="en",
    task_type="sentence-pair classification",
    metric="Accuracy",
    label_list=None,
) -> HubSource:
    return HubSource(
        dataset,
        config,
        splits,
        renaming(fields, labels),
        language,
        task_type,
        metric,
        tuple(label_list or labels) if (label_list or labels) else None,
    )


HUB: dict[str, HubSource] = {
    # GLUE
    "sst2": _pair(
        "nyu-mll/glue",
        "sst2",
        SENTENCE,
        ("negative", "positive"),
        task_type="single-sentence classification (sentiment)",
    ),
    "cola": _pair(
        "nyu-mll/glue",
        "cola",
        SENTENCE,
        ("unacceptable", "acceptable"),
        task_type="single-sentence classification (acceptability)",
        metric="Matthews correlation",
    ),
    "mnli": _pair("nyu-mll/glue", "mnli", NLI_PAIR, NLI3, {"train": "train", "validation": "validation_matched"}),
    "qnli": _pair(
        "nyu-mll/glue", "qnli", {"question": "text_a", "sentence": "text_b"}, ("entailment", "not_entailment")
    ),
    "qqp": _pair("nyu-mll/glue", "qqp", {"question1": "text_a", "question2": "text_b"}, ("not_duplicate", "duplicate")),
    "mrpc": _pair("nyu-mll/glue", "mrpc", GLUE_PAIR, ("not_equivalent", "equivalent")),
    "stsb": _pair(
        "nyu-mll/glue",
        "stsb",
        GLUE_PAIR,
        None,
        task_type="sentence-pair regression (similarity 0-5)",
        metric="Pearson correlation",
    ),
    # SuperGLUE
    "rte": _pair("aps/super_glue", "rte", NLI_PAIR, ("entailment", "not_entailment")),
    "cb": _pair("aps/super_glue", "cb", NLI_PAIR, ("entailment", "contradiction", "neutral")),
    "boolq": _pair(
        "aps/super_glue", "boolq", {"question": "question", "passage": "context"}, BINARY, task_type="yes/no qa"
    ),
    "wic": HubSource(
        "aps/super_glue", "wic", TRAIN_VAL, wic_record, "en", "word-in-context classification", "Accuracy", BINARY
    ),
    "wsc": HubSource("aps/super_glue", "wsc.fixed", TRAIN_VAL, wsc_record, "en", "coreference", "Accuracy", BINARY),
    "multirc": HubSource(
        "aps/super_glue",
        "multirc",
        TRAIN_VAL,
        multirc_record,
        "en",
        "multi-answer reading comprehension",
        "F1a",
        None,
        grouped=True,
    ),
    # other English
    "snli": _pair(
        "stanfordnlp/snli",
        None,
        NLI_PAIR,
        NLI3,
        {"train": "train", "validation": "validation", "test": "test"},
        metric="macro F1",
    ),
    "scitail": HubSource(
        "allenai/scitail",
        "tsv_format",
        {"train": "train", "validation": "validation", "test": "test"},
        scitail_record,
        "en",
        "sentence-pair classification (NLI, 2-way)",
        "Accuracy",
        ("entailment", "not_entailment"),
    ),
    "trec": HubSource(
        "CogComp/trec",
        None,
        {"train": "train", "test": "test"},
        trec_record,
        "en",
        "single-sentence classification",
        "macro F1",
        TREC_COARSE,
    ),
    "dbpedia": HubSource(
        "fancyzhx/dbpedia_14",
        None,
        {"train": "train", "test": "test"},
        dbpedia_record,
        "en",
        "single-sentence classification",
        "macro F1",
        DBPEDIA,
    ),
    # CLUE and other Chinese
    "afqmc": _pair("clue/clue", "afqmc", GLUE_PAIR, ("0", "1"), language="zh"),
    "cmnli": _pair("clue/clue", "cmnli", GLUE_PAIR, CLUE_NLI3, language="zh", label_list=NLI3),
    "ocnli": _pair("clue/clue", "ocnli", GLUE_PAIR, CLUE_NLI3, language="zh", label_list=NLI3),
    "tnews": HubSource(
        "clue/clue",
        "tnews",
        TRAIN_VAL,
        tnews_record,
        "zh",
        "single-sentence classification",
        "Accuracy",
        tuple(sorted(TNEWS_NAMES.values())),
    ),
    "c3": HubSource(
        "clue/clue",
        "c3",
        {"train": "train", "validation": "validation", "test": "test"},
        c3_record,
        "zh",
        "multiple-choice reading comprehension",
        "Accuracy",
    ),
    "cmrc2018": HubSource("hfl/cmrc2018", None, TRAIN_VAL, squad_record, "zh", "extractive QA (span)", "F1"),
    "drcd": HubSource(
        "clue/clue",
        "drcd",
        {"train": "train", "validation": "validation", "test": "test"},
        squad_record,
        "zh",
        "extractive QA (span)",
        "F1",
    ),
}


def source(task: str) -> HubSource:
    if task not in HUB:
        raise ConfigError(
            f"no hub dataset is known for task {task!r} (known: {', '.join(sorted(HUB))}); use the local data folder"
        )
    return HUB[task]


def records(task: str, rows: Iterable[Row]) -> Iterator[Record]:
    """The local records of a hub split's rows (in order; rows without a gold label are skipped)."""
    hub = source(task)
    if hub.grouped:
        group: list[Row] = []
        for row in rows:
            if group and (row["idx"]["paragraph"], row["idx"]["question"]) != (
                group[0]["idx"]["paragraph"],
                group[0]["idx"]["question"],
            ):
                yield hub.convert(group)
                group = []
            group.append(row)
        if group:
            yield hub.convert(group)
        return
    for row in rows:
        record = hub.convert(row)
        if record is not None:
            yield record


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "loading tasks from the Hugging Face hub needs the 'datasets' package: "
            "pip install datasets (or pip install 'talora[hub]')"
        ) from None
    return datasets


def fetch_rows(hub: HubSource, split: str, cache_dir: str | None = None) -> Iterable[Row]:
    """The rows of one split of a hub dataset: the one place that reaches the network."""
    datasets = _datasets()
    try:
        return datasets.load_dataset(hub.dataset, hub.config, split=split, cache_dir=cache_dir)
    except Exception as err:  # not found, no network, a changed dataset: the datasets package has no common base
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise DataError(
            f"hub dataset {hub.dataset}" + (f" ({hub.config})" if hub.config else "") + f" split {split!r} could "
            f"not be fetched ({type(err).__name__}: {lines[0] if lines else 'no message'})"
        ) from None


def _write_manifest(out_dir: Path, entries: list[dict]) -> None:
    """MANIFEST.json with ``entries`` replacing the tasks of the same name, so pulls add up in one folder."""
    from ..atomic import atomic_write  # imports torch: only a pull that got this far pays for it

    path = out_dir / "MANIFEST.json"
    manifest: dict = {}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {err.lineno}: malformed JSON ({err.msg}); not adding tasks to it") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks", []), list):
            raise DataError(f"{path}: field 'tasks' is missing or not a list; not adding tasks to it")
    new = {e["task"] for e in entries}
    kept = [e for e in manifest.get("tasks", []) if not (isinstance(e, dict) and e.get("task") in new)]
    manifest["tasks"] = kept + entries
    atomic_write(path, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))


def download(tasks: Sequence[str], out_dir: str | Path, cache_dir: str | None = None) -> Path:
    """Write the named tasks from the hub as a data folder (``MANIFEST.json`` + JSONL files); tasks
    already in the folder's manifest stay, those of the same name are replaced. Each task enters the
    manifest once all its splits are written, so a failed pull leaves the earlier ones usable."""
    for task in tasks:
        source(task)  # unknown tasks fail before anything is downloaded
    out_dir = Path(out_dir)
    for task in tasks:
        hub = HUB[task]
        path = f"{hub.language}/{task}"
        splits = {}
        for local, remote in hub.splits.items():
            rows = fetch_rows(hub, remote, cache_dir)
            file = out_dir / path / f"{local}.jsonl"
            file.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            with open(file, "w", encoding="utf-8") as fh:
                for record in records(task, rows):
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                    n += 1
            if n == 0:
                raise DataError(
                    f"hub dataset {hub.dataset} ({hub.config}) split {remote!r} of task {task!r} has no labelled rows"
                )
            splits[local] = {"kept": n, "file": f"{path}/{local}.jsonl"}
        entry = {
            "task": task,
            "language": hub.language,
            "type": hub.type,
            "metric": hub.metric,
            "label_list": list(hub.label_list) if hub.label_list else None,
            "path": path,
            "splits": splits,
            "source": f"hub:{hub.dataset}" + (f"/{hub.config}" if hub.config else ""),
        }
        _write_manifest(out_dir, [entry])
    return out_dir
