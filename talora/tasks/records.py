"""Records from data files: the formats read, the tasks a folder without ``MANIFEST.json`` holds, and
the splits of such a task.

Files may be ``.jsonl`` (one object per line), ``.json`` (an array of objects, or JSON lines), ``.csv``,
``.tsv`` (header row first) or ``.parquet`` (needs ``pyarrow``). A folder holds one sub-folder per task
with ``train``, ``validation`` and ``test`` files (``dev``, ``valid`` and ``val`` also name the validation
split), or loose data files, each one task; a single file is split by its ``split`` column when it has one,
else every record is train. A task found without a manifest that has no validation split gets one: a
seeded slice of train (10%, at most 5,000), held out so that every class keeps a training example. What
each record means is ``infer``'s business.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
SPLIT_ORDER = ("train", "validation", "test")
SPLIT_COLUMN = "split"
HELD_OUT_SHARE = 0.1
HELD_OUT_CAP = 5000  # the shared data's cap on a validation split

# (number, where, record): number is the line (row, item) the record starts its uid with; where names it
# in messages ("<file>, line 7").
Record = tuple[int, str, dict]


# ---------------------------------------------------------------- reading files
def _text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _json_lines(path: Path, text: str) -> list[Record]:
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        records.append((lineno, where, obj))
    return records


def _json_array(path: Path, text: str) -> list[Record]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected an array of JSON objects, got {type(items).__name__}")
    records = []
    for i, obj in enumerate(items, 1):
        where = f"{path}, item {i}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        records.append((i, where, obj))
    return records


def _delimited(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[Record] = []
    header: list[str] | None = None
    try:
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                repeated = [name for name, n in Counter(header).items() if n > 1]
                if repeated or "" in header:
                    what = f"repeats column {repeated[0]!r}" if repeated else "has an empty column name"
                    raise DataError(f"{path}, line {lineno}: the header row {what}")
                continue
            where = f"{path}, line {lineno}"
            if len(row) > len(header):
                raise DataError(f"{where}: {len(row)} cells, more than the header's {len(header)} columns")
            # A short row lacks its last columns: they are missing fields, reported where they are needed.
            records.append((lineno, where, dict(zip(header, row))))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: unreadable {path.suffix} row ({err})") from None
    return records


def _parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs the 'pyarrow' package: pip install pyarrow (or save the data as "
            f".jsonl or .csv)"
        ) from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow's own errors are not one class; any of them means an unreadable file
        raise DataError(f"{path}: unreadable Parquet file ({type(err).__name__}: {err})") from None
    return [(i, f"{path}, row {i}", row) for i, row in enumerate(rows, 1)]


def read_records(path: Path) -> list[Record]:
    """Every record of a data file, by its suffix; blank lines and rows are skipped."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet(path)
    text = _text(path)
    if suffix in (".csv", ".tsv"):
        return _delimited(path, text, "\t" if suffix == ".tsv" else ",")
    if suffix == ".json" and text.lstrip().startswith("["):
        return _json_array(path, text)
    return _json_lines(path, text)


# ---------------------------------------------------------------- finding tasks without a manifest
def split_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The split files directly in ``folder`` and the names of the other data files there (ignored)."""
    found: dict[str, Path] = {}
    ignored = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        split = SPLIT_NAMES.get(path.stem.lower())
        if split is None:
            ignored.append(path.name)
        elif split in found:
            raise DataError(f"{folder}: both {found[split].name} and {path.name} hold the {split} split; keep one")
        else:
            found[split] = path
    return found, ignored


def discover(data_dir: Path) -> dict[str, dict]:
    """Manifest-like entries of the tasks a folder without MANIFEST.json (or a single data file) holds;
    empty when it holds none."""
    if data_dir.is_file():
        if data_dir.suffix.lower() not in DATA_SUFFIXES:
            raise DataError(
                f"{data_dir}: not a data file this loader reads (a folder, or one of {', '.join(DATA_SUFFIXES)})"
            )
        return {data_dir.stem: _entry(data_dir.stem, data_dir, file=data_dir)}
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder or file")
    own, ignored = split_files(data_dir)
    if own:  # the folder is itself one task
        name = data_dir.resolve().name
        return {name: _entry(name, data_dir, files=own, ignored=ignored)}
    entries: dict[str, dict] = {}
    for child in sorted(data_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            files, ignored = split_files(child)
            entry = _entry(child.name, child, files=files, ignored=ignored) if files else None
        elif child.is_file() and child.suffix.lower() in DATA_SUFFIXES:
            entry = _entry(child.stem, child, file=child)
        else:
            entry = None
        if entry is None:
            continue
        if entry["task"] in entries:
            raise DataError(
                f"{data_dir}: task {entry['task']!r} is both {entries[entry['task']]['_where']} and {child}; rename one"
            )
        entries[entry["task"]] = entry
    return entries


def _entry(name: str, where: Path, files: dict[str, Path] | None = None, file: Path | None = None, ignored=()) -> dict:
    return {
        "task": name,
        "path": name,
        "language": "",
        "_where": str(where),
        "_discovered": True,
        "_files": files or {},
        "_file": file,
        "_ignored": list(ignored),
    }


def layout_hint(data_dir: Path) -> str:
    """Why a folder without a manifest held no task, and what to do about it."""
    if not data_dir.is_dir():
        return f"{data_dir} is not a folder"
    deeper = next(
        (p for p in sorted(data_dir.glob("*/*/*")) if p.is_file() and p.suffix.lower() in DATA_SUFFIXES), None
    )
    wanted = (
        "a task is a sub-folder holding train.jsonl (or .json, .csv, .tsv, .parquet; also validation, test), "
        "or one data file"
    )
    if deeper is not None:
        rel = deeper.relative_to(data_dir)
        return (
            f"{wanted}; {rel} is two folders down: pass --data-dir {data_dir / rel.parts[0]} or write a MANIFEST.json"
        )
    return wanted


# ---------------------------------------------------------------- splits of a task
@dataclass
class Splits:
    records: dict[str, list[Record]]
    uid_split: dict[str, str]  # the split its examples' uids name (a held-out slice keeps 'train', its file)
    notes: list[str]

    def ordered(self) -> list[str]:
        """Split names in the usual order (train, validation, test), any others after them."""
        rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
        return sorted(self.records, key=lambda s: (rank.get(s, len(rank)), s))


def read_splits(entry: dict, files: dict[str, Path]) -> Splits:
    """The records of each split: from the split files, or from one file by its ``split`` column."""
    single = entry.get("_file")
    notes = []
    if single is None:
        records = {}
        for split, path in files.items():
            if not path.is_file():
                raise DataError(f"{path}: split file of task {entry['task']!r} does not exist")
            records[split] = read_records(path)
            if path.stem.lower() != split:
                notes.append(f"{path.name} read as the {split} split")
        if entry.get("_ignored"):
            notes.append(f"not split files, ignored: {', '.join(entry['_ignored'])}")
        return Splits(records, {s: s for s in records}, notes)
    rows = read_records(single)
    if not rows:
        raise DataError(f"{single}, line 1: the file holds no records")
    if not any(SPLIT_COLUMN in obj for _, _, obj in rows):
        notes.append(f"no {SPLIT_COLUMN!r} column: every record is train")
        return Splits({"train": rows}, {"train": "train"}, notes)
    records: dict[str, list[Record]] = {}
    for number, where, obj in rows:
        raw = obj.get(SPLIT_COLUMN)
        split = SPLIT_NAMES.get(raw.strip().lower()) if isinstance(raw, str) else None
        if split is None:
            raise DataError(
                f"{where}: field {SPLIT_COLUMN!r} is {raw!r}, not one of train, validation (or dev, valid, val), test"
            )
        records.setdefault(split, []).append((number, where, {k: v for k, v in obj.items() if k != SPLIT_COLUMN}))
    notes.append(f"splits from its {SPLIT_COLUMN!r} column")
    return Splits(records, {s: s for s in records}, notes)


def hold_out_validation(splits: Splits, task: str, class_of=None) -> None:
    """Give a task without a validation split a seeded slice of train; every class keeps a train record."""
    if "validation" in splits.records:
        return
    train = splits.records.get("train") or []
    wanted = min(HELD_OUT_CAP, max(1, int(len(train) * HELD_OUT_SHARE))) if len(train) >= 2 else 0
    if not wanted:
        splits.notes.append("no validation split, and too few train records to hold one out")
        return
    # A string seed goes through SHA-512, so the slice depends on the task name alone, not on PYTHONHASHSEED.
    order = list(range(len(train)))
    random.Random(f"held-out:{task}").shuffle(order)
    left = Counter(class_of(obj) for _, _, obj in train) if class_of else Counter()
    picked = set()
    for i in order:
        if len(picked) == wanted:
            break
        cls = class_of(train[i][2]) if class_of else None
        if class_of and left[cls] <= 1:
            continue
        left[cls] -= 1
        picked.add(i)
    if not picked:
        splits.notes.append("no validation split, and no train record could be held out without losing a class")
        return
    splits.records["validation"] = [r for i, r in enumerate(train) if i in picked]
    splits.records["train"] = [r for i, r in enumerate(train) if i not in picked]
    splits.uid_split["validation"] = "train"
    splits.notes.append(
        f"no validation split: {len(picked)} of the {len(train)} train records held out as validation "
        f"(seeded by the task name)"
    )
