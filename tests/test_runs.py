"""The run manifest: a re-run of a sweep skips finished, intact units and redoes damaged ones, and
processes sharing a sweep never run one unit twice."""

import json
import threading

import pytest
import yaml
from conftest import write_tiny_sweep

from talora.cli import main
from talora.recipes import sweep
from talora.recipes.suites import load_suite


@pytest.fixture
def tiny_demo(tmp_path, tiny_models):
    methods = {
        "talora": {"method_args": {"length": 2, "layers": 1}},
        "pt": {"method": "prompt_tuning", "method_args": {"length": 2}},
        "pt_scratch": {"method": "prompt_tuning", "method_args": {"length": 2}, "from_scratch": True},
    }
    return write_tiny_sweep(tmp_path / "sweep.yaml", methods, seeds=(0, 1))


def test_rerun_skips_finished_units_and_redoes_damaged_ones(tmp_path, tiny_demo, monkeypatch, capsys):
    out = tmp_path / "sweep"
    first = sweep.run_sweep(tiny_demo, out)
    assert set(first["target"]) == {"zero_shot", "talora", "pt", "pt_scratch"}
    assert "pt_scratch" not in first["source"] and not (out / "pt_scratch").exists()  # no source training
    assert len(first["target"]["pt"]["tweet_emotion (k=2)"]) == 2  # one score per seed
    assert first["parameters"]["pt"]["per_task"] == 2 * 64
    table = (out / "results-sweep.md").read_text()
    assert "| unseen task | tweet_emotion (k=2) |" in table and " ± " in table
    # Vanilla prompt tuning transfers nothing, so from-scratch equals transfer from its source run.
    assert first["target"]["pt_scratch"] == first["target"]["pt"]
    calls = []
    real_transfer = sweep.run_transfer
    monkeypatch.setattr(sweep, "run_train", lambda *a, **k: calls.append("train") or pytest.fail("re-trained"))
    monkeypatch.setattr(sweep, "run_transfer", lambda *a, **k: calls.append("transfer") or real_transfer(*a, **k))
    monkeypatch.setattr(sweep, "zero_shot", lambda *a, **k: pytest.fail("zero-shot pass redone"))
    again = sweep.run_sweep(tiny_demo, out)
    assert calls == [] and again["target"] == first["target"] and again["source"] == first["source"]
    # A resumed table still states what its units cost, read back from their records.
    assert (
        again["unit_seconds"] == first["unit_seconds"]
        and "s the table's units took" in (out / "results-sweep.md").read_text()
    )

    damaged = out / "talora-tweet_emotion-k2-s1" / "adapter.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:10])
    # --status names what a re-run would redo (the damaged unit), in the order the sweep runs units.
    status = sweep.sweep_status(tiny_demo, out)
    assert [u["unit"].split(" ", 1)[1] for u in status if not u["finished"]] == [
        "transfer talora tweet_emotion k=2 seed=1"
    ]
    assert len(status) == 3 + 2 + 3 * 2  # zero-shot (2 sources, 1 target), 2 source trainings, 3 methods x 2 seeds
    assert main(["sweep", "--config", str(tiny_demo), "--output", str(out), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "11 units, 10 finished, 1 to run" in printed and "talora-tweet_emotion-k2-s1" in printed
    third = sweep.run_sweep(tiny_demo, out)
    assert calls == ["transfer"] and third["target"] == first["target"]  # same seed, same result


def test_a_unit_another_process_runs_is_skipped_or_waited_for(tmp_path):
    from talora.recipes.runs import RunManifest, _claim

    unit = tmp_path / "u"
    held, recorded = threading.Event(), threading.Event()

    def other_process():
        with _claim(unit, wait=True):  # a lock on the folder: a second open of it conflicts, as in another process
            held.set()
            recorded.wait(10)
            (unit / "predictions.json").write_text("theirs")
            RunManifest(tmp_path).record("u", unit, {"score": 1})

    other = threading.Thread(target=other_process)
    other.start()
    held.wait(10)
    manifest = RunManifest(tmp_path)
    assert manifest.run("u", unit, lambda: pytest.fail("ran a unit another process holds"), wait=False) is None
    recorded.set()
    # Waiting, it gets the other's record once that process lets go, and runs nothing itself.
    assert manifest.run("u", unit, lambda: pytest.fail("ran a unit another process finished")) == {"score": 1}
    other.join()


def test_a_unit_held_elsewhere_runs_last_and_the_table_keeps_its_order(tmp_path, tiny_demo, monkeypatch):
    from talora.recipes.runs import _claim

    reference = sweep.run_sweep(tiny_demo, tmp_path / "alone")
    out = tmp_path / "shared"
    held_unit = out / "pt-tweet_emotion-k2-s0"
    others_done, held = threading.Event(), threading.Event()
    ran = []
    real_transfer = sweep.run_transfer

    def transfer(*args, **kwargs):
        ran.append(args[4].name)  # (source, task, k, seed, output)
        if len(ran) == 5:  # every unit but the held one: let go of it, unrun
            others_done.set()
        return real_transfer(*args, **kwargs)

    def other_process():
        with _claim(held_unit, wait=True):
            held.set()
            others_done.wait(60)

    monkeypatch.setattr(sweep, "run_transfer", transfer)
    other = threading.Thread(target=other_process)
    other.start()
    held.wait(10)
    shared = sweep.run_sweep(tiny_demo, out)
    other.join()
    assert ran[-1] == held_unit.name and len(ran) == 6
    assert shared["target"] == reference["target"] and shared["units"] == reference["units"]


# Runs the sweep CLI with every unit it runs (zero-shot, source training, transfer) noted in a shared file.
_NOTING_SWEEP = """
import sys
from talora.recipes import sweep
from talora.cli import main

def noting(real, name_of):
    def run(*args, **kwargs):
        with open(sys.argv[1], "a") as log:
            log.write(name_of(args) + "\\n")
        return real(*args, **kwargs)
    return run

sweep.run_transfer = noting(sweep.run_transfer, lambda a: a[4].name)
sweep.run_train = noting(sweep.run_train, lambda a: "train " + a[0].method)
sweep.zero_shot = noting(sweep.zero_shot, lambda a: "zero-shot " + a[1])
sys.exit(main(["sweep", "--quiet", "--config", sys.argv[2], "--output", sys.argv[3]]))
"""


def test_two_processes_on_one_sweep_run_each_unit_once(tmp_path, tiny_demo):
    import subprocess
    import sys

    ran = tmp_path / "ran.txt"
    command = [sys.executable, "-c", _NOTING_SWEEP, str(ran), str(tiny_demo), str(tmp_path / "out")]
    both = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in both:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    units = ran.read_text().split("\n")[:-1]
    # 3 zero-shot units (2 sources, 1 target), 2 source trainings, 3 methods x 2 seeds of transfer
    assert len(units) == len(set(units)) == 3 + 2 + 6
    results = json.loads((tmp_path / "out" / "results-sweep.json").read_text())
    assert all(len(results["target"][m]["tweet_emotion (k=2)"]) == 2 for m in ("talora", "pt", "pt_scratch"))


def test_sweep_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": {}, "methods": {"talora": {"method_arg": {}}}}))
    with pytest.raises(Exception, match="methods.talora: unknown key"):
        sweep.load_sweep(bad)
    bad.write_text(yaml.safe_dump({"run": {}, "methods": {"nope": {}}}))
    with pytest.raises(Exception, match="unknown method 'nope'"):
        sweep.load_sweep(bad)
    for k in (0, "some"):
        bad.write_text(yaml.safe_dump({"run": {}, "methods": {"talora": {}}, "ks": [k]}))
        with pytest.raises(Exception, match="ks: .* is neither a positive number of shots nor 'all'"):
            sweep.load_sweep(bad)


def test_a_sweep_takes_its_tasks_and_grid_from_a_suite(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"suite": "synthetic", "seeds": [5], "run": {"model": "tiny"}, "methods": {"prompt_tuning": {}}})
    )
    sweep_cfg, runs = sweep.load_sweep(path)
    suite = load_suite("synthetic")
    cfg, scratch = runs["prompt_tuning"]
    assert cfg.tasks == list(suite.sources) and cfg.data_dir is None and not scratch
    assert sweep_cfg.targets == list(suite.targets) and sweep_cfg.ks == list(suite.ks) and sweep_cfg.seeds == [5]


def test_a_partial_table_marks_missing_cells_and_withholds_their_average():
    results = {
        "source": {},
        "parameters": {},
        "seconds": 1.0,
        # zero-shot is deterministic: one score per task serves every k of that task's rows
        "target": {"zero_shot": {"a": 0.5, "b": 0.25}, "m": {"a (k=2)": [1.0, 0.5]}},
        "scored": {"m": {"a (k=2)": [{"majority": 0.6, "top_share": 0.95}, {"majority": 0.6, "top_share": 0.5}]}},
    }
    table = sweep.format_table(results)
    # the majority column, and a dagger where one seed gave one answer to 95 % of its lines
    assert "| unseen task | a (k=2) | 60.0 | 50.0 | 75.0 ± 35.4† |" in table
    assert "90% or more of a unit's predictions are one answer" in table
    # zero-shot's task b has no row: no trained method reached it, and its score is not a k
    assert "| b" not in table
    assert "| unseen task | **average** | 60.0 | **50.0** | **75.0** |" in table


def test_a_missing_cell_withholds_the_average():
    results = {
        "source": {},
        "parameters": {},
        "seconds": 1.0,
        "target": {"zero_shot": {"a": 0.5, "b": 0.25}, "m": {"a (k=2)": [1.0]}, "n": {"b (k=2)": [0.5]}},
    }
    table = sweep.format_table(results)
    assert "| unseen task | b (k=2) | - | 25.0 | - | 50.0 |" in table
    assert "| unseen task | **average** | - | **37.5** | - | - |" in table


def test_unit_names_ignore_fields_left_at_their_defaults():
    from talora.config import RunConfig, TrainConfig

    base = sweep.config_digest(RunConfig(method="talora", train=TrainConfig(steps=5)))
    # Setting a field to its default (what a field added by a later release looks like to an old config).
    assert sweep.config_digest(RunConfig(method="talora", select_on="auto", train=TrainConfig(steps=5))) == base
    assert sweep.config_digest(RunConfig(method="talora", select_on="validation", train=TrainConfig(steps=5))) != base
    assert sweep.config_digest(RunConfig(method="talora", train=TrainConfig(steps=6))) != base
    assert sweep.config_digest(RunConfig(method="talora", method_args={"rank": 2})) != sweep.config_digest(
        RunConfig(method="talora")
    )
    assert sweep.config_digest(RunConfig(), "scratch=True") != sweep.config_digest(RunConfig(), "scratch=False")


def test_unit_names_do_not_depend_on_where_the_shared_data_folder_sits(tmp_path, monkeypatch):
    """A committed sweep folder resumes on a machine whose shared data folder has another path; a
    folder that is not the shared one is still named by its path."""
    from talora.config import RunConfig

    names = []
    for where in ("here", "there"):
        data = tmp_path / where / "data"
        data.mkdir(parents=True)
        (data / "MANIFEST.json").write_text("{}")
        monkeypatch.setenv("TALORA_DATA", str(data))
        names.append(sweep.config_digest(RunConfig(method="talora", data_dir=str(data))))
        other = tmp_path / where / "mine"
        names.append(sweep.config_digest(RunConfig(method="talora", data_dir=str(other))))
    shared_here, mine_here, shared_there, mine_there = names
    assert shared_here == shared_there
    assert mine_here != mine_there
    assert shared_here != mine_here


def test_source_training_is_shared_by_sweeps_that_differ_only_in_transfer():
    from talora.config import RunConfig, TrainConfig

    a, b = RunConfig(transfer=TrainConfig(steps=10)), RunConfig(transfer=TrainConfig(steps=99))
    assert sweep.config_digest(a, ignore=("transfer",)) == sweep.config_digest(b, ignore=("transfer",))
    assert sweep.config_digest(a) != sweep.config_digest(b)
    assert sweep.config_digest(a, ignore=("transfer",)) != sweep.config_digest(
        RunConfig(train=TrainConfig(steps=10)), ignore=("transfer",)
    )


def test_a_sweep_sharing_another_sweeps_sources_transfers_with_its_own_settings(tmp_path, tiny_models, monkeypatch):
    methods = {"talora": {"method_args": {"length": 2, "layers": 1}}}
    path = write_tiny_sweep(tmp_path / "first.yaml", methods)
    out = tmp_path / "sweep"
    sweep.run_sweep(path, out)
    second = yaml.safe_load(path.read_text())
    second["run"]["transfer"]["steps"] = 3
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(second))
    trained = []
    real_train = sweep.run_train
    monkeypatch.setattr(sweep, "run_train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    sweep.run_sweep(path, out)
    assert trained == []  # the source run is the first sweep's
    assert yaml.safe_load((out / "talora" / "config.yaml").read_text())["transfer"]["steps"] == 1
    assert yaml.safe_load((out / "talora-tweet_emotion-k2-s0" / "config.yaml").read_text())["transfer"]["steps"] == 3
    steps = [
        r["step"]
        for r in map(json.loads, (out / "talora-tweet_emotion-k2-s0" / "log.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert max(steps) == 3


def test_method_args_equal_to_the_defaults_do_not_change_a_unit_name():
    from talora.config import RunConfig

    assert sweep.config_digest(RunConfig(method="talora", method_args={"length": 20})) == sweep.config_digest(
        RunConfig(method="talora")
    )
    assert sweep.config_digest(RunConfig(method="talora", method_args={"length": 8})) != sweep.config_digest(
        RunConfig(method="talora")
    )


def test_two_manifests_on_one_folder_keep_each_others_units(tmp_path):
    from talora.recipes.runs import RunManifest

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for f in ("adapter.safetensors", "adapter.json", "metrics.json"):
            (tmp_path / name / f).write_text(name)
    first, second = RunManifest(tmp_path), RunManifest(tmp_path)  # two sweeps started on the same folder
    first.record("unit a", tmp_path / "a", {"score": 1})
    second.record("unit b", tmp_path / "b", {"score": 2})
    again = RunManifest(tmp_path)
    assert again.finished("unit a", tmp_path / "a") == {"score": 1}
    assert again.finished("unit b", tmp_path / "b") == {"score": 2}


def test_a_unit_without_an_adapter_is_finished_only_while_its_predictions_are_intact(tmp_path):
    from talora.recipes.runs import RunManifest

    unit = tmp_path / "zero_shot" / "target-rte"
    unit.mkdir(parents=True)
    (unit / "predictions.json").write_text("{}")
    manifest = RunManifest(tmp_path)
    manifest.record("zero-shot rte", unit, {"score": 0.5})
    assert RunManifest(tmp_path).finished("zero-shot rte", unit) == {"score": 0.5}
    # The folder is recorded relative to the manifest's, so the sweep folder can move as a whole.
    assert json.loads((tmp_path / "manifest.json").read_text())["zero-shot rte"]["output"] == "zero_shot/target-rte"
    (unit / "predictions.json").write_text('{"changed": 1}')
    assert RunManifest(tmp_path).finished("zero-shot rte", unit) is None
    (unit / "predictions.json").unlink()
    assert RunManifest(tmp_path).finished("zero-shot rte", unit) is None


def test_a_unit_recorded_before_predictions_were_hashed_stays_finished(tmp_path):
    from talora.recipes.runs import RunManifest

    unit = tmp_path / "u"
    unit.mkdir()
    for f in ("adapter.safetensors", "adapter.json", "metrics.json", "predictions.json"):
        (unit / f).write_text(f)
    manifest = RunManifest(tmp_path)
    manifest.record("old", unit, {"score": 1})
    manifest.record("older", tmp_path / "zero", {"score": 2})
    entries = json.loads((tmp_path / "manifest.json").read_text())
    del entries["old"]["files"]["predictions.json"]  # as an earlier release wrote it
    entries["older"]["files"] = None  # an earlier release's zero-shot unit
    (tmp_path / "manifest.json").write_text(json.dumps(entries))
    assert RunManifest(tmp_path).finished("old", unit) == {"score": 1}
    assert RunManifest(tmp_path).finished("older", tmp_path / "zero") is None  # its predictions are gone
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "predictions.json").write_text("{}")
    assert RunManifest(tmp_path).finished("older", tmp_path / "zero") == {"score": 2}


def test_a_sweep_without_target_adapters_keeps_sources_and_reruns_nothing(tmp_path, tiny_models, monkeypatch):
    methods = {"talora": {"method_args": {"length": 2, "layers": 1}}}
    path = write_tiny_sweep(tmp_path / "sweep.yaml", methods, seeds=(0,))
    out = tmp_path / "sweep"
    first = sweep.run_sweep(path, out)  # adapters kept, then dropped by a second pass
    unit = out / "talora-tweet_emotion-k2-s0"
    assert (unit / "adapter.safetensors").is_file()
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "target_adapters": False}))
    real_transfer = sweep.run_transfer
    monkeypatch.setattr(sweep, "run_transfer", lambda *a, **k: pytest.fail("a finished unit ran again"))
    second = sweep.run_sweep(path, out)
    assert not (unit / "adapter.safetensors").exists() and (unit / "predictions.json").is_file()
    assert any((out / "talora").rglob("adapter.safetensors"))  # what targets transfer from stays
    assert second["target"] == first["target"]
    third = sweep.run_sweep(path, out)  # recorded without its adapter: still finished
    assert third["target"] == first["target"]
    (unit / "predictions.json").unlink()
    monkeypatch.setattr(sweep, "run_transfer", real_transfer)
    fourth = sweep.run_sweep(path, out)  # its predictions gone: the unit runs again, without an adapter
    assert fourth["target"] == first["target"] and not (unit / "adapter.safetensors").exists()


def test_a_stale_manifest_does_not_undo_another_sweeps_record(tmp_path):
    from talora.recipes.runs import RunManifest

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.json").write_text(name)
    RunManifest(tmp_path).record("unit a", tmp_path / "a", {"score": 1})
    stale = RunManifest(tmp_path)  # a long sweep read the manifest here
    (tmp_path / "a" / "predictions.json").write_text("a, scored again")
    RunManifest(tmp_path).record("unit a", tmp_path / "a", {"score": 2})  # another sweep re-records it
    stale.record("unit b", tmp_path / "b", {"score": 3})
    again = RunManifest(tmp_path)
    assert again.finished("unit a", tmp_path / "a") == {"score": 2}
    assert again.finished("unit b", tmp_path / "b") == {"score": 3}
