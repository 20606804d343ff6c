import json
from pathlib import Path

import pytest

from aihf import checkpoints
from aihf.errors import InputError
from aihf.experiments import queue
from aihf.lm import train
from aihf.lm.bench import bench
from aihf.lm.tiny import save_tiny_models


def tiny_bench_data(tmp_path, prompts):
    data = tmp_path / "data"
    data.mkdir()
    rows = {
        "demos.jsonl": [{"prompt": p, "completion": " great fun"} for p in prompts],
        "prefs.jsonl": [{"prompt": p, "chosen": " good", "rejected": " bad"} for p in prompts],
        "prefs_heldout.jsonl": [{"prompt": "A", "chosen": " nice", "rejected": " awful"}],
        "prompts.jsonl": [{"prompt": p} for p in prompts],
    }
    for name, items in rows.items():
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    return data


@pytest.mark.slow
def test_quick_bench_runs_end_to_end_on_tiny_models(tmp_path, monkeypatch):
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    prompts = [f"The film {i} was" for i in range(8)]
    data = tiny_bench_data(tmp_path, prompts)
    monkeypatch.setattr(bench, "load_prompts", lambda split, limit=None: prompts[:limit])
    cfg = bench.BenchConfig(
        methods=["sft", "dpo", "aihf"],
        sweep_methods=["dpo"],
        pref_sizes=[4],
        kl_scales=[2.0],
        n_demos=8,
        n_prefs=8,
        n_test=4,
        steps=2,
        iterations=1,
        base_model=str(base),
        data_dir=str(data),
        curve_points=2,
    )
    # chat-model data ship their test prompts rendered: the bench evaluates on those
    (data / "test_prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": f"<user>{p}"}) + "\n" for p in prompts)
    )
    cfg.shard = (1, 2)  # half of the jobs in one process...
    assert bench.run_bench(tmp_path / "out", cfg) == {
        "shard": [1, 2],
        "runs": 2,
        "failed": [],
        "postponed": [],
    }  # jobs 1, 3 of 5
    assert not (tmp_path / "out" / "report.md").exists()
    cfg.shard = None  # ...then the rest, reusing those, and the report
    results = bench.run_bench(tmp_path / "out", cfg)
    for method in ("base", "sft", "dpo", "aihf"):
        assert {"gold_reward_mean", "gold_reward_std", "kl_to_ref", "win_rate"} <= set(
            results["methods"][method]
        )
    assert "reward_accuracy" in results["methods"]["aihf"]
    assert (tmp_path / "out" / "report.md").read_text().count("| sft |") == 1
    assert (tmp_path / "out" / "gold_reward.png").is_file()
    dpo = json.loads((tmp_path / "out" / "runs" / "dpo_d8_p8_k1_s0" / "eval.json").read_text())
    # DPO starts from the SFT policy, trained once for the three DPO runs of seed 0 (8 and 4 pairs, KL x 2)
    (start,) = (tmp_path / "out" / "sft_starts").glob("d8_s0_*/")
    assert (start / "policy" / "config.json").is_file() and not (start / "checkpoints").exists()
    assert json.loads((start / "start.json").read_text())["config"]["seed"] == dpo["config"]["seed"]
    assert dpo["samples"][0]["prompt"].startswith("<user>")
    # gold reward against steps: the main runs keep 2 snapshots (1 for AIHF's single iteration)
    assert [p["step"] for p in results["curves"]["dpo"]["0"]] == [1, 2]
    assert all(p["gold_reward_sem"] >= 0 for p in results["curves"]["dpo"]["0"])  # the plateau rule's s.e.
    assert [p["step"] for p in results["curves"]["aihf"]["0"]] == [1]
    assert "dpo_d8_p8_k2_s0" not in {r for r in results["curves"]}  # sweep runs keep none
    assert not (tmp_path / "out" / "runs" / "dpo_d8_p8_k2_s0" / "snapshots").exists()
    assert (tmp_path / "out" / "gold_vs_steps.png").is_file()
    assert "paper Fig. 6" in (tmp_path / "out" / "report.md").read_text()
    assert {(r["method"], r["prefs"], r["kl_scale"]) for r in results["runs"]} >= {
        ("dpo", 4, 1.0),
        ("dpo", 8, 2.0),
    }


@pytest.mark.slow
def test_workers_split_the_jobs_and_the_caller_writes_the_report(tmp_path, capsys, monkeypatch):
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    cfg = bench.BenchConfig(
        methods=["sft", "dpo"],
        n_demos=8,
        n_prefs=8,
        n_test=4,
        steps=2,
        base_model=str(base),
        data_dir=str(data),
    )
    results = bench.run_bench(tmp_path / "out", cfg, workers=2)
    assert capsys.readouterr().out.count("[bench] reusing") == 2  # both jobs came from the workers
    assert {"sft", "dpo"} <= set(results["methods"]) and (tmp_path / "out" / "report.md").is_file()

    def no_workers(*args):
        raise AssertionError("nothing is pending: no workers should start")

    monkeypatch.setattr(bench, "_run_workers", no_workers)
    again = bench.run_bench(tmp_path / "out", cfg, workers=2)
    assert again["methods"]["dpo"]["gold_reward_mean"] == results["methods"]["dpo"]["gold_reward_mean"]


@pytest.mark.parametrize(
    ("killed_in", "job"),
    [  # the default suite kills a joint run and a staged one; DPO's (a TRL trainer) are slow-marked
        pytest.param("sft", "dpo_d8_p8_k1_s0", marks=pytest.mark.slow),
        pytest.param("", "dpo_d8_p8_k1_s0", marks=pytest.mark.slow),
        ("", "aihf_d8_p8_k1_s0"),
        ("sft", "rlhf_d8_p8_k1_s0"),
    ],
)
def test_a_job_killed_mid_stage_resumes_from_its_checkpoint(tmp_path, monkeypatch, killed_in, job):
    """Killed right after a stage's checkpoint at step 4 of 8, the job goes on from there and ends
    where an uninterrupted run ends; a finished job keeps no checkpoints."""
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    method = job.split("_")[0]
    cfg = bench.BenchConfig(
        methods=[method], n_demos=8, n_prefs=8, n_test=4, steps=8, iterations=8, rlhf_reward_steps=8
    )
    cfg.base_model, cfg.data_dir = str(base), str(data)
    straight = bench.run_bench(tmp_path / "straight", cfg)

    write_manifest = checkpoints.write_manifest
    # the SFT stage of DPO and RLHF is their shared SFT start (OUT/sft_starts/NAME)
    stage = "sft_starts/*" if killed_in == "sft" else f"runs/{job}"

    def kill_after_checkpoint_4(directory):
        write_manifest(directory)
        killed_at = Path(directory).parent in (tmp_path / "cut").glob(f"{stage}/checkpoints")
        if killed_at and Path(directory).name.strip(".").startswith("checkpoint-4"):
            raise KeyboardInterrupt  # not an Exception: the bench does not catch it, as with a kill

    monkeypatch.setattr(checkpoints, "write_manifest", kill_after_checkpoint_4)
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(tmp_path / "cut", cfg)
    assert not (tmp_path / "cut" / "runs" / job / "eval.json").exists()
    monkeypatch.setattr(checkpoints, "write_manifest", write_manifest)
    run_training, resumes = train.run_training, []

    def noted(trainer, *args, **kwargs):
        resumes.append((trainer, kwargs["config"]["resume_from_checkpoint"]))
        return run_training(trainer, *args, **kwargs)

    monkeypatch.setattr(train, "run_training", noted)
    resumed = bench.run_bench(tmp_path / "cut", cfg)
    record = json.loads((tmp_path / "cut" / "runs" / job / "eval.json").read_text())
    assert record["resumed"] is (killed_in != "sft")  # the job's own checkpoints
    assert (("sft", True) in resumes) is (killed_in == "sft")  # the shared SFT start's
    assert resumed["methods"][method]["gold_reward_mean"] == straight["methods"][method]["gold_reward_mean"]
    policy = Path("runs") / job / "policy" / "model.safetensors"
    assert (tmp_path / "cut" / policy).read_bytes() == (tmp_path / "straight" / policy).read_bytes()
    assert not list((tmp_path / "cut").rglob("checkpoints"))


def test_a_job_dir_left_by_other_settings_is_cleared_not_resumed(tmp_path):
    run_dir = tmp_path / "runs" / "dpo_d8_p8_k1_s0"
    (run_dir / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (run_dir / "sft" / "policy").mkdir(parents=True)
    cfg = bench.BenchConfig(methods=["dpo"], steps=8)
    store = bench._store(tmp_path, cfg)
    assert bench._claim(store, cfg.job("dpo", 8, 8, 1.0, 0)) is False
    assert sorted(p.name for p in run_dir.iterdir()) == ["job.json"]
    (run_dir / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-4" / "optimizer.pt").write_bytes(b"saved")
    checkpoints.write_manifest(run_dir / "checkpoints" / "checkpoint-4")
    (run_dir / "checkpoints" / "checkpoint-6").mkdir()  # the kill came while this one was written
    assert bench._claim(store, cfg.job("dpo", 8, 8, 1.0, 0)) is True  # the same job: resumed
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-4"]  # from its newest
    other = bench.BenchConfig(methods=["dpo"], steps=16)
    assert bench._claim(store, other.job("dpo", 8, 8, 1.0, 0)) is False
    assert not (run_dir / "checkpoints").exists()


def _sft_and_dpo_with_sft_finished(tmp_path, out):
    """A tiny SFT + DPO bench whose SFT job has finished under `out`."""
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    cfg = bench.BenchConfig(methods=["sft", "dpo"], n_demos=8, n_prefs=8, n_test=4, steps=2)
    cfg.base_model, cfg.data_dir = str(base), str(data)
    bench.run_bench(out, cfg, only=["sft_d8_p8_k1_s0"])
    return cfg


def test_report_only_reads_the_finished_jobs_and_trains_nothing(tmp_path):
    cfg = _sft_and_dpo_with_sft_finished(tmp_path, tmp_path / "out")
    results = bench.run_bench(tmp_path / "out", cfg, report_only=True)
    assert "gold_reward_mean" in results["methods"]["sft"]
    assert results["methods"]["dpo"] == {"error": "not run"}
    assert "| dpo | 0 | | not run yet |" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "runs" / "dpo_d8_p8_k1_s0").exists()
    records = tmp_path / "out" / "records"
    assert [p.name for p in records.iterdir()] == ["sft_d8_p8_k1_s0.json"]  # finished jobs only


def test_records_of_an_earlier_machine_are_reused_and_a_broken_one_is_named(tmp_path, monkeypatch):
    cfg = _sft_and_dpo_with_sft_finished(tmp_path, tmp_path / "old")
    first = bench.run_bench(tmp_path / "old", cfg, report_only=True)

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded job is not rerun")

    monkeypatch.setattr(bench, "_run_job", no_training)
    cfg.records = str(tmp_path / "old" / "records")  # a new machine: OUT is empty, the records committed
    bench.run_bench(tmp_path / "new", cfg, only=["sft_d8_p8_k1_s0"])
    again = bench.run_bench(tmp_path / "new", cfg, report_only=True)
    assert again["methods"]["sft"] == first["methods"]["sft"]
    assert (tmp_path / "new" / "records" / "sft_d8_p8_k1_s0.json").is_file()  # carried on
    cfg.steps = 3  # other settings: the record does not count
    with pytest.raises(AssertionError, match="not rerun"):
        bench.run_bench(tmp_path / "new", cfg, only=["sft_d8_p8_k1_s0"])
    cfg.steps = 2
    (Path(cfg.records) / "sft_d8_p8_k1_s0.json").write_text('{"method": "sft",\n')
    with pytest.raises(InputError, match=r"sft_d8_p8_k1_s0.json: line 2: not a JSON job record"):
        bench.run_bench(tmp_path / "new2", cfg, report_only=True)


def test_every_process_evaluates_against_the_one_cached_reference(tmp_path, monkeypatch):
    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    cfg = bench.BenchConfig(methods=["sft"], n_demos=8, n_prefs=8, n_test=4, steps=2)
    cfg.base_model, cfg.data_dir = str(base), str(data)
    first = bench.run_bench(tmp_path / "out", cfg)
    cached = json.loads((tmp_path / "out" / "reference.json").read_text())

    def no_sampling(*args, **kwargs):
        raise AssertionError("the cached reference samples and base evaluation are reused")

    monkeypatch.setattr(bench, "reference_samples", no_sampling)
    monkeypatch.setattr(bench, "evaluate", no_sampling)
    again = bench.run_bench(tmp_path / "out", cfg)
    assert again["reference"] == first["reference"] and again["methods"]["base"] == first["methods"]["base"]
    cfg.n_test = 3  # other evaluation settings: the cache does not apply
    with pytest.raises(AssertionError, match="cached reference"):
        bench.run_bench(tmp_path / "out", cfg)
    assert len(cached["samples"]["completions"]) == 4


def test_dpo_rpo_and_rlhf_of_a_seed_share_one_sft_run_and_rlhf_ends_as_with_its_own(tmp_path, monkeypatch):
    """The SFT start of DPO and RPO and RLHF's SFT stage are one seeded run, trained once per seed;
    RLHF, given it as a finished stage, ends bit for bit where it ends training the stage itself."""
    from aihf.lm import baselines

    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    cfg = bench.BenchConfig(
        methods=["dpo", "rpo", "rlhf"], n_demos=8, n_prefs=8, n_test=4, steps=2, iterations=2
    )
    cfg.base_model, cfg.data_dir, cfg.rlhf_reward_steps = str(base), str(data), 2
    run_sft, sft_runs = baselines.run_sft, []

    def counted_sft(*args, **kwargs):
        sft_runs.append(args[2].output_dir)
        return run_sft(*args, **kwargs)

    monkeypatch.setattr(baselines, "run_sft", counted_sft)
    out = tmp_path / "out"
    bench.run_bench(out, cfg)
    assert len(sft_runs) == 1 and Path(sft_runs[0]).parent == out / "sft_starts"
    assert len(list((out / "sft_starts").glob("d8_s0_*/policy"))) == 1

    inputs = bench._Inputs.load(out, cfg)  # RLHF on its own, as `aihf lm train --trainer rlhf` runs it
    values = cfg.job("rlhf", 8, 8, 1.0, 0).spec["config"]
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    train.run_training(
        "rlhf",
        cfg.base_model,
        str(tmp_path / "alone"),
        reward_model=str(inputs.reward_init),
        config=values,
        demos=inputs.demos[:8],
        prefs=inputs.prefs[:8],
        prompts=inputs.rl_prompts,
    )
    assert len(sft_runs) == 2 and Path(sft_runs[1]) == tmp_path / "alone" / "sft"
    for model in ("sft/policy", "reward_stage/reward_model", "policy"):
        shared = (out / "runs" / "rlhf_d8_p8_k1_s0" / model / "model.safetensors").read_bytes()
        assert shared == (tmp_path / "alone" / model / "model.safetensors").read_bytes(), model


@pytest.mark.parametrize("curve_points", [0, 2])
def test_the_sft_method_is_the_shared_start_unless_it_keeps_snapshots(tmp_path, monkeypatch, curve_points):
    """The `sft` job and DPO's start are one seeded run: trained once, the job's policy its hard links. A
    job that keeps snapshots for its gold curve trains in place (the start keeps none)."""
    from aihf.lm import baselines

    base = save_tiny_models(tmp_path / "tiny", seed=0) / "policy"
    data = tiny_bench_data(tmp_path, [f"The film {i} was" for i in range(8)])
    cfg = bench.BenchConfig(methods=["sft", "dpo"], n_demos=8, n_prefs=8, n_test=4, steps=2)
    cfg.base_model, cfg.data_dir, cfg.curve_points = str(base), str(data), curve_points
    run_sft, sft_runs = baselines.run_sft, []

    def counted_sft(*args, **kwargs):
        sft_runs.append(Path(args[2].output_dir))
        return run_sft(*args, **kwargs)

    monkeypatch.setattr(baselines, "run_sft", counted_sft)
    out = tmp_path / "out"
    bench.run_bench(out, cfg)
    (start,) = (out / "sft_starts").glob("d8_s0_*/")
    job = out / "runs" / "sft_d8_p8_k1_s0"
    record = json.loads((job / "eval.json").read_text())
    assert "metrics" in record and record["train_metrics"]["train_loss"] > 0
    weights = [p / "policy" / "model.safetensors" for p in (start, job)]
    if curve_points:
        assert sft_runs == [job, start] and len(record["curve"]) == 2
        assert weights[0].stat().st_ino != weights[1].stat().st_ino
    else:
        assert sft_runs == [start] and record["curve"] == []
        assert weights[0].stat().st_ino == weights[1].stat().st_ino


def test_an_sft_start_is_trained_once_per_config_and_demonstrations(tmp_path, monkeypatch):
    trained = []

    def fake_sft(trainer, model, out, config, demos):
        trained.append((config["learning_rate"], len(demos)))
        (Path(out) / "policy").mkdir(parents=True)
        (Path(out) / "policy" / "config.json").write_text("{}")

    monkeypatch.setattr(train, "run_training", fake_sft)
    cfg = bench.BenchConfig()
    sft = {"seed": 0, "learning_rate": 1e-4, "max_steps": 2}
    demos = [{"prompt": "A", "completion": " b"}, {"prompt": "C", "completion": " d"}]
    first = bench._sft_start(tmp_path, sft, cfg, demos)
    assert bench._sft_start(tmp_path, dict(sft), cfg, list(demos)) == first  # found, not trained again
    assert bench._sft_start(tmp_path, sft | {"learning_rate": 2e-4}, cfg, demos) != first
    assert bench._sft_start(tmp_path, sft, cfg, demos[:1]) != first
    assert trained == [(1e-4, 2), (2e-4, 2), (1e-4, 1)]
    assert json.loads((first / "start.json").read_text())["demos"] == 2


def _fake_record(path, method, seconds, snapshots=0, resumed=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"method": method, "config": {"snapshot_steps": snapshots}, "metrics": {"gold_reward_mean": 0.5}}
    path.write_text(json.dumps(run | {"seconds": seconds, "resumed": resumed}))


def test_a_jobs_expected_length_is_its_methods_longest_finished_run_alike_in_snapshots(tmp_path):
    cfg = bench.BenchConfig(methods=["dpo"], n_demos=8, n_prefs=8, steps=8, curve_points=2)
    main, sweep = cfg.job("dpo", 8, 8, 1.0, 0), cfg.job("dpo", 8, 4, 1.0, 0)
    assert bench.expected_seconds(tmp_path, main, cfg) is None  # nothing of its method finished
    _fake_record(tmp_path / "runs" / "a" / "eval.json", "dpo", 900.0, snapshots=2)
    assert bench.expected_seconds(tmp_path, sweep, cfg) == 900.0  # the only dpo run, though unlike
    cfg.records = str(tmp_path / "records")  # an earlier machine's records count too
    _fake_record(tmp_path / "records" / "b.json", "dpo", 600.0)
    _fake_record(tmp_path / "records" / "c.json", "dpo", 500.0)
    _fake_record(tmp_path / "records" / "d.json", "dpo", 50.0, resumed=True)  # its clock: the last part
    _fake_record(tmp_path / "records" / "e.json", "sft", 5000.0)
    assert bench.expected_seconds(tmp_path, sweep, cfg) == 600.0
    assert bench.expected_seconds(tmp_path, main, cfg) == 900.0  # it keeps snapshots, as run a did
    (tmp_path / "records" / "b.json").write_text('{"method":\n')
    with pytest.raises(InputError, match=r"b.json: line 2: not a JSON job record"):
        bench.expected_seconds(tmp_path, sweep, cfg)


def test_a_time_limit_starts_only_the_jobs_expected_to_end_in_time(tmp_path, monkeypatch, capsys):
    import time
    from types import SimpleNamespace

    cfg = _sft_and_dpo_with_sft_finished(tmp_path, tmp_path / "out")
    now = 1_000_000.0  # a stopped clock: what is left does not depend on how fast the machine is
    monkeypatch.setattr(queue, "time", SimpleNamespace(time=lambda: now, strftime=time.strftime))
    started = []

    def fake_job(job, record, inputs):
        started.append(job.name)
        return record | {"metrics": {}}

    monkeypatch.setattr(bench, "_run_job", fake_job)
    dpo = "dpo_d8_p8_k1_s0"
    # no DPO run has finished: its length is unknown, so it starts while time is left...
    assert bench.run_bench(tmp_path / "out", cfg, only=[dpo], deadline=now + 60)["postponed"] == []
    assert started == [dpo]
    # ...and not once the time is up
    left = bench.run_bench(tmp_path / "out", cfg, only=[dpo], deadline=now - 1)["postponed"]
    assert left == [dpo] and started == [dpo]
    assert f"not starting {dpo}: length unknown, 0 min left" in capsys.readouterr().out
    _fake_record(tmp_path / "out" / "runs" / "dpo_d8_p4_k1_s0" / "eval.json", "dpo", 3600.0)
    cfg.shard = (0, 1)
    result = bench.run_bench(tmp_path / "out", cfg, deadline=now + 1800)  # an hour-long job
    assert result["postponed"] == [dpo] and started == [dpo]
    assert "expected 60 min, 30 min left" in capsys.readouterr().out
    assert result["runs"] == 1  # the finished SFT job is still reused
    result = bench.run_bench(tmp_path / "out", cfg, deadline=now + 3601)
    assert result["postponed"] == [] and started == [dpo, dpo]
