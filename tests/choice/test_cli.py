import json

import numpy as np
import pytest

from aihf.cli import main


def _solve(capsys, *args):
    code = main(["choice", "solve", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_json_interface(capsys):
    code, out, err = _solve(
        capsys,
        "--demo-counts",
        "50,50",
        "--pref-counts",
        "0>1:6,1>0:4",
        "--beta",
        "1",
        "--alpha",
        "1",
        "--json",
    )
    assert code == 0 and err == ""
    result = json.loads(out)
    assert set(result) == {"sft", "rm", "rlhf", "aihf"}
    assert result["sft"] == pytest.approx([0.5, 0.5])
    assert result["rm"] == pytest.approx([0.6, 0.4])
    assert result["rlhf"] == pytest.approx([0.6, 0.4])
    assert result["aihf"] == pytest.approx([56 / 110, 54 / 110])
    assert len(out.strip().splitlines()) == 1


def test_solve_table_and_details(capsys):
    code, out, _ = _solve(capsys, "--demo-counts", "6,4", "--pref-counts", "0>1:50,1>0:50")
    assert code == 0 and "AIHF" in out and "0.5091" in out and "residual" in out
    code, out, _ = _solve(
        capsys, "--demo-counts", "3,0,2", "--pref-counts", "0>1:2,2>0", "--json", "--details"
    )
    result = json.loads(out)
    assert result["residual"]["aihf"] < 1e-9 and len(result["aihf_reward"]) == 3
    assert result["rlhf"][1] == 0.0


def test_prior_with_alpha_zero_gives_rlhf(capsys):
    _, out, _ = _solve(capsys, "--demo-counts", "6,3,1", "--pref-counts", "0>1:3,1>2:4,2>0:2,1>0:1", "--json")
    rlhf = json.loads(out)["rlhf"]
    prior = ",".join(str(p) for p in (0.6, 0.3, 0.1))
    _, out, _ = _solve(
        capsys,
        "--demo-counts",
        "6,3,1",
        "--pref-counts",
        "0>1:3,1>2:4,2>0:2,1>0:1",
        "--alpha",
        "0",
        "--prior",
        prior,
        "--json",
    )
    assert json.loads(out)["aihf"] == pytest.approx(rlhf, abs=1e-9)


def test_data_files_json_and_csv(capsys, tmp_path):
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"demo_counts": [50, 50], "pref_counts": [[0, 6], [4, 0]]}))
    triples = tmp_path / "t.json"
    triples.write_text(json.dumps({"demo_counts": [50, 50], "preferences": [[0, 1, 6], [1, 0, 4]]}))
    table = tmp_path / "d.csv"
    table.write_text("kind,i,j,count\ndemo,0,,50\ndemo,1,,50\npref,0,1,6\npref,1,0,4\n")
    results = []
    for path in (matrix, triples, table):
        code, out, _ = _solve(capsys, "--data", str(path), "--json")
        assert code == 0
        results.append(json.loads(out))
    assert results[0] == results[1] == results[2]
    assert results[0]["aihf"][0] == pytest.approx(56 / 110)


BAD_SOLVE = [
    (["--demo-counts", "5,-1"], "non-negative integer"),
    (["--demo-counts", "5,1.5"], "non-negative integer"),
    (["--demo-counts", "5,x"], "non-negative integer"),
    (["--demo-counts", "5,5", "--pref-counts", "0>1:2.5"], "non-negative integer"),
    (["--demo-counts", "5,5", "--pref-counts", "0>1:-2"], "non-negative integer"),
    (["--demo-counts", "5,5", "--pref-counts", "1>1:3"], "over itself"),
    (["--demo-counts", "5,5", "--pref-counts", "0>2:3"], "out of range"),
    (["--demo-counts", "5,5", "--pref-counts", "0-1:3"], "winner>loser"),
    (["--demo-counts", "5,5", "--prior", "0.2,0.3,0.5"], "expected 2"),
    (["--demo-counts", "5,5", "--prior", "0.2,0.3"], "summing to 1"),
    (["--demo-counts", "5,5", "--prior", "1,0"], "probability 0 to demonstrated"),
    (["--demo-counts", ""], "empty"),
    (["--demo-counts", "0,0", "--pref-counts", "0>1:3"], "no demonstrations"),
    (["--demo-counts", "5,5", "--beta", "0"], "--beta"),
    (["--demo-counts", "5,5", "--beta", "-1"], "--beta"),
    (["--demo-counts", "5,5", "--alpha", "-0.5"], "--alpha"),
]


@pytest.mark.parametrize(("args", "message"), BAD_SOLVE)
def test_bad_solve_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = _solve(capsys, *args, "--json")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


BAD_FILES = [
    ("bad.json", '{"demo_counts": [1, 2', "not valid JSON"),
    ("shape.json", '{"demo_counts": [1, 2], "pref_counts": [[0, 1, 2], [1, 0, 3]]}', "shape"),
    ("self.json", '{"demo_counts": [1, 2], "preferences": [[1, 1, 3]]}', "over itself"),
    ("range.json", '{"demo_counts": [1, 2], "preferences": [[0, 5, 3]]}', "out of range"),
    ("float.json", '{"demo_counts": [1, 2.5]}', "non-negative integer"),
    ("field.json", '{"demo_counts": [1, 2], "extra": 1}', "unknown field"),
    ("empty.json", '{"demo_counts": []}', "empty"),
    ("header.csv", "a,b,c,d\ndemo,0,,3\n", "header"),
    ("kind.csv", "kind,i,j,count\nfoo,0,,3\n", "field 'kind'"),
    ("count.csv", "kind,i,j,count\ndemo,0,,-3\n", "line 2, field 'count'"),
    ("self.csv", "kind,i,j,count\ndemo,0,,3\npref,1,1,2\n", "over itself"),
    ("rows.csv", "kind,i,j,count\n", "no data rows"),
    ("data.txt", "hello", "unknown data format"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_data_files_exit_2(capsys, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    code, out, err = _solve(capsys, "--data", str(path), "--json")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_missing_data_file(capsys, tmp_path):
    code, _, err = _solve(capsys, "--data", str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize(
    "args",
    [
        ["example1", "--beta", "0"],
        ["example2", "--repeats", "1"],
        ["sweep", "--alpha", "-1"],
        ["sweep", "--demo-sizes", "10,0"],
        ["sweep", "--pref-sizes", "a"],
        ["variance", "--beta", "nan"],
    ],
)
def test_bad_experiment_input_writes_nothing(capsys, tmp_path, args):
    out_dir = tmp_path / "out"
    code = main(["choice", args[0], "--out", str(out_dir), *args[1:]])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_example_commands_write_their_files(capsys, tmp_path):
    assert main(["choice", "example1", "--out", str(tmp_path)]) == 0
    assert main(["choice", "example2", "--out", str(tmp_path), "--repeats", "3"]) == 0
    assert main(["choice", "variance", "--out", str(tmp_path), "--repeats", "50"]) == 0
    out, _ = capsys.readouterr()
    assert "0.5091" in out and "mass on 45..49" in out and "p(1-p)/(|D|+|P|)" in out
    for stem in ("example1", "example2", "variance"):
        for suffix in ("json", "csv", "png"):
            path = tmp_path / f"{stem}.{suffix}"
            assert path.stat().st_size > 0
    assert (tmp_path / "example1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "example2.json").read_text())
    assert saved["uncovered_mass"]["sft"]["mean"] == 0 and saved["uncovered_mass"]["rlhf"]["mean"] == 0
    assert np.isclose(saved["uncovered_mass"]["aihf"]["mean"], 0.1, atol=0.01)


def test_data_and_pref_counts_conflict(capsys, tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"demo_counts": [1, 2]}')
    code, out, err = _solve(capsys, "--data", str(path), "--pref-counts", "0>1:1")
    assert code == 2 and out == "" and "--pref-counts cannot be combined" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["choice", "solve", "--data", str(path), "--demo-counts", "1,2"])
    assert exit_info.value.code == 2


def test_sweep_command(capsys, tmp_path):
    args = ["--demo-sizes", "20,200", "--pref-sizes", "20", "--repeats", "3", "--actions", "4"]
    assert main(["choice", "sweep", "--out", str(tmp_path), *args]) == 0
    assert "best" in capsys.readouterr().out
    assert json.loads((tmp_path / "sweep.json").read_text())["demo_sizes"] == [20, 200]
    assert (tmp_path / "sweep.png").is_file() and (tmp_path / "sweep.csv").is_file()
