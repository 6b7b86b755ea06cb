"""The command line: fastopt info, check and bench."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fastopt
from fastopt import _bench, _numba_backend, cli


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastopt {fastopt.__version__}" in out
    assert "threading layer: " in out and "numba " in out and "cpu: " in out


def test_check_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "check.json"
    code = cli.main(["check", "--algo", "adam,sgd", "--sizes", "7,1023", "--steps", "5",
                     "--json", str(path)])
    out = capsys.readouterr().out
    records = json.loads(path.read_text())
    assert code == 0
    # Every runnable backend but the reference: numba, and numba-cuda under the simulator.
    n_backends = sum(r is None and b != "numpy" for b, r in fastopt.available_backends().items())
    n_cases = (len(_bench.OPTION_SETS["adam"]) + len(_bench.OPTION_SETS["sgd"])) * 2 * 2
    n_cases *= n_backends
    assert len(records) == n_cases and f"{n_cases} passed, 0 failed" in out
    assert {"backend", "algorithm", "dtype", "size", "error_ratio", "passed"} <= records[0].keys()
    assert all(r["passed"] and r["error_ratio"] <= 1 for r in records)


def test_check_fails_on_a_wrong_backend(monkeypatch, capsys):
    real_adam = _numba_backend.adam

    def off_by_a_little(param, *args, **kwargs):
        real_adam(param, *args, **kwargs)
        param *= np.float32(1.001)

    monkeypatch.setattr(_numba_backend, "adam", off_by_a_little)
    code = cli.main(["check", "--algo", "adam", "--sizes", "33", "--dtype", "float32",
                     "--steps", "3", "--backends", "numba"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "0 passed" in out


def test_bench_quick_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--algo", "sgd,adam", "--sizes", "1000", "--repeat", "1",
                     "--backends", "numba,numpy", "--json", str(path)])
    assert code == 0
    records = json.loads(path.read_text())
    assert {(r["backend"], r["algorithm"]) for r in records} == {
        ("numba", "sgd"), ("numpy", "sgd"), ("numba", "adam"), ("numpy", "adam")}
    for r in records:
        assert {"backend", "algorithm", "dtype", "size", "seconds", "gbps",
                "roofline_fraction"} <= r.keys()
        assert r["seconds"] > 0 and r["gbps"] > 0 and r["roofline_fraction"] > 0
    captured = capsys.readouterr()
    assert "[2/2] adam float32 n=1000" in captured.err  # progress
    assert "roofline" in captured.out


def test_bench_ctrl_c_prints_what_was_measured(monkeypatch, capsys):
    real = _bench.interleaved_medians
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_bench, "interleaved_medians", interrupt_second)
    code = cli.main(["bench", "--algo", "sgd,adam", "--sizes", "500", "--repeat", "1",
                     "--backends", "numba"])
    captured = capsys.readouterr()
    assert code == 130
    assert "interrupted" in captured.err
    assert "numba    sgd" in captured.out and "adam" not in captured.out


@pytest.mark.parametrize("argv,message", [
    (["bench", "--algo", "lion"], "unknown algorithm 'lion'"),
    (["check", "--backends", "cupy"], "backend 'cupy' is not available"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv)


def test_bench_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    code = cli.main(["bench", "--algo", "adam,rmsprop", "--sizes", "256,4096", "--repeat", "1",
                     "--backends", "numba,numpy", "--plot", str(path)])
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_case_steps_every_tensor():
    shapes = [(3, 4), (5,), (2, 2, 2)]
    rec = _bench.run_model("numba", shapes, rounds=1, max_seconds=0.1)
    assert rec["tensors"] == 3 and rec["size"] == 12 + 5 + 8
    assert rec["seconds"] > 0 and rec["gbps"] > 0


def test_gpt2_small_shapes():
    shapes = _bench.gpt2_small_shapes()
    assert len(shapes) == 148
    assert sum(int(np.prod(s)) for s in shapes) == 124_439_808


def test_bench_points_gpu_backends_to_their_benchmark():
    if fastopt.available_backends()["numba-cuda"] is not None:
        pytest.skip("numba-cuda unavailable: the error is then 'not available'")
    with pytest.raises(SystemExit, match="python benchmarks/gpu.py"):
        cli.main(["bench", "--backends", "numba-cuda", "--sizes", "100"])
