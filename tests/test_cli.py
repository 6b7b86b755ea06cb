"""The command line: fastopt info, check and bench."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import _bench, _numba_backend, cli

ROOT = Path(__file__).resolve().parent.parent


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
    real_update = _numba_backend.update

    def off_by_a_little(spec, flags, param, *args, **kwargs):
        real_update(spec, flags, param, *args, **kwargs)
        if spec.name == "adam":
            param *= np.float32(1.001)

    monkeypatch.setattr(_numba_backend, "update", off_by_a_little)
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


def test_bench_16bit_dtypes_and_state_dtype(tmp_path, capsys):
    pytest.importorskip("ml_dtypes")
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--algo", "adam", "--sizes", "1000", "--repeat", "1",
                     "--backends", "numba", "--dtype", "float32,bfloat16,float16",
                     "--json", str(path)])
    assert code == 0
    records = json.loads(path.read_text())
    assert [(r["dtype"], r["bytes_per_element"]) for r in records] == [
        ("float32", 28), ("bfloat16", 14), ("float16", 14)]
    code = cli.main(["bench", "--algo", "adam", "--sizes", "1000", "--repeat", "1",
                     "--backends", "numba,numpy", "--dtype", "float32,bfloat16",
                     "--state-dtype", "bfloat16", "--json", str(path)])
    assert code == 0
    records = json.loads(path.read_text())
    assert {(r["dtype"], r["bytes_per_element"]) for r in records} == {
        ("float32/bfloat16", 20), ("bfloat16", 14)}
    assert all(r["seconds"] > 0 for r in records)
    assert "[1/1] adam float32/bfloat16 n=1000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dtype", "float64", "--state-dtype", "bfloat16"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dtype", "int8"])


def test_bench_8bit_states(tmp_path, capsys):
    pytest.importorskip("ml_dtypes")
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--algo", "adam,schedulefree_adamw", "--sizes", "1024",
                     "--repeat", "1", "--backends", "numba,numpy",
                     "--dtype", "float32,bfloat16", "--state-dtype", "8bit-fp8",
                     "--json", str(path)])
    assert code == 0
    records = json.loads(path.read_text())
    # Adam: 12 (or 6) bytes of param and grad, 2 x (1 + 4/256) per state; Schedule-Free
    # keeps z (parameter values) in the parameter's dtype.
    got = {(r["algorithm"], r["dtype"], r["bytes_per_element"]) for r in records}
    assert got == {("adam", "float32/8bit-fp8", 16.06), ("adam", "bfloat16/8bit-fp8", 10.06),
                   ("schedulefree_adamw", "float32/8bit-fp8", 22.03),
                   ("schedulefree_adamw", "bfloat16/8bit-fp8", 12.03)}, got
    assert all(r["seconds"] > 0 for r in records)


def test_bench_ctrl_c_prints_what_was_measured(monkeypatch, capsys):
    real = _bench.interleaved_times
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_bench, "interleaved_times", interrupt_second)
    code = cli.main(["bench", "--algo", "sgd,adam", "--sizes", "500", "--repeat", "1",
                     "--backends", "numba"])
    captured = capsys.readouterr()
    assert code == 130
    assert "interrupted" in captured.err
    assert "numba    sgd" in captured.out and "adam" not in captured.out


BAD_ARGUMENTS = [
    (["bench", "--algo", "nosuch"], "argument --algo: unknown algorithm 'nosuch'"),
    (["bench", "--sizes", "abc"], "argument --sizes: 'abc' is not an element count"),
    (["bench", "--sizes", "0"], "argument --sizes: 0 is not an element count"),
    (["bench", "--sizes", "4096,-5"], "argument --sizes: -5 is not an element count"),
    (["bench", "--repeat", "0"], "argument --repeat: 0 is too small"),
    (["bench", "--json", "/no/such/folder/b.json"], "folder '/no/such/folder' does not exist"),
    (["bench", "--plot", "/no/such/folder/b.png"], "folder '/no/such/folder' does not exist"),
    (["check", "--dtype", "float16"], "argument --dtype: unknown dtype 'float16'"),
    (["check", "--steps", "0"], "argument --steps: 0 is too small"),
    (["check", "--sizes", "7,x"], "argument --sizes: 'x' is not an element count"),
    (["check", "--backends", "cupy"], "backend 'cupy' is not available"),
    (["check", "--backends", "tpu"], "argument --backends: unknown backend 'tpu'"),
    (["check", "--json", "/no/such/folder/c.json"], "folder '/no/such/folder' does not exist"),
    (["demo", "--set", "adam.nosuch=1"], "adam has no hyperparameter 'nosuch'"),
    (["demo", "--set", "adam.lr=-1"], "Invalid lr: -1.0"),
    (["demo", "--set", "adam.lr=fast"], "invalid value in 'adam.lr=fast'"),
    (["demo", "--set", "nosuch.lr=1"], "invalid 'nosuch.lr=1'"),
    (["demo", "--optimizers", "sgd", "--set", "adam.lr=0.1"], "'adam' is not among"),
    (["demo", "--optimizers", "adam,nosuch"], "unknown optimizer 'nosuch'"),
    (["demo", "--epochs", "0"], "argument --epochs: 0 is too small"),
    (["demo", "--backend", "cupy"], "argument --backend: invalid choice: 'cupy'"),
    (["demo", "--mnist", "/no/such/folder"], "train-images-idx3-ubyte .* not found"),
    (["demo", "--json", "/no/such/folder/d.json"], "folder '/no/such/folder' does not exist"),
]


@pytest.fixture
def nothing_may_run(monkeypatch):
    """Every long-running entry point fails the test if it is reached."""
    from fastopt import _check, _demo

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    for mod, name in ((_bench, "run_bench"), (_bench, "run_model"), (_check, "run_check"),
                      (_demo, "train"), (_demo, "load_digits")):
        monkeypatch.setattr(mod, name, must_not_run)


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in
                                                             BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_one_message_before_any_work(argv, message, capsys,
                                                               nothing_may_run):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # argparse: the usage, then one line of error
    assert last.startswith(f"fastopt {argv[0]}: error: ")
    assert re.search(message, last), last


def test_bad_argument_from_the_shell(tmp_path):
    """What a user sees: one usage line block and one error line, status 2, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "fastopt.cli", "bench", "--sizes", "abc"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: fastopt bench")
    assert proc.stderr.strip().splitlines()[-1] == (
        "fastopt bench: error: argument --sizes: 'abc' is not an element count (expected "
        "integers >= 1, such as 4096,65536)")


@pytest.mark.parametrize("command,names", [
    ("bench", [*_bench.ALGORITHMS, "2^12,2^16,2^20,2^22,2^24", "2^12,2^18"]),
    ("check", [*_bench.ALGORITHMS, "1,7,1023,65539", "float32, float64"]),
    ("demo", ["sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, adadelta"]),
])
def test_help_lists_the_valid_names_and_default_sizes(command, names, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in names:
        assert name in out, name


def test_cli_sizes_are_used_as_given(monkeypatch, capsys):
    seen = {}

    def fake_check(backends, algorithms, dtypes, sizes, steps):
        seen.update(backends=backends, algorithms=algorithms, dtypes=dtypes, sizes=sizes,
                    steps=steps)
        return []

    from fastopt import _check
    monkeypatch.setattr(_check, "run_check", fake_check)
    assert cli.main(["check", "--algo", "adam, sgd", "--sizes", "7,2048", "--dtype",
                     "float64", "--steps", "3", "--backends", "numba"]) == 0
    assert seen == dict(backends=["numba"], algorithms=["adam", "sgd"], dtypes=["float64"],
                        sizes=(7, 2048), steps=3)


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


def test_bench_points_gpu_backends_to_their_benchmark(capsys):
    if fastopt.available_backends()["numba-cuda"] is not None:
        pytest.skip("numba-cuda unavailable: the error is then 'not available'")
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--backends", "numba-cuda", "--sizes", "100"])
    assert e.value.code == 2
    assert "python benchmarks/gpu.py" in capsys.readouterr().err


def _record(algorithm, backend, size, torch_impl):
    return dict(backend=backend, algorithm=algorithm, dtype="float32", size=size,
                seconds=1e-3, gbps=10.0 * size.bit_length(), roofline_fraction=0.5,
                roofline_gbps=30.0 * size.bit_length(), speedup_vs_reference=None,
                speedup_vs_torch=2.0 if torch_impl else None, torch_impl=torch_impl,
                working_set_bytes=size * 16)


def test_bench_figure_names_torch_and_marks_the_caches(monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(_bench, "cache_sizes", lambda: [("L1d", 96 << 10), ("L2", 2 << 20),
                                                        ("L3", 1 << 30)])
    sizes = [2**12, 2**16, 2**20]
    records = [_record("adam", b, n, "torch.optim.Adam fused") for b in ("numba", "numpy")
               for n in sizes]
    records += [_record("rmsprop", "numba", n, "torch.optim.RMSprop foreach") for n in sizes]
    fig = _bench.figure(records)
    try:
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert {"fastopt numba", "fastopt numpy", "roofline (same traffic)",
                "torch.optim, fused=True", "torch.optim, foreach=True"} <= set(legend)
        assert any("L1d 96 KiB" in t and "L2 2 MiB" in t for t in legend)
        for ax in fig.axes[:2]:
            assert ax.get_legend() is None  # one legend below the panels hides no curve
            marks = [t.get_text().strip() for t in ax.texts]
            assert marks == ["L1d", "L2"]  # L3 (1 GiB / 16 B > 2^20) is off the axis
            x = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_color() == "0.55"]
            assert x == [(96 << 10) / 16, (2 << 20) / 16]  # where 16 B/element fill them
    finally:
        plt.close(fig)


def test_cache_sizes_reads_this_machine():
    caches = _bench.cache_sizes()
    if not os.path.isdir("/sys/devices/system/cpu/cpu0/cache"):
        assert caches == []
        return
    labels = [label for label, _ in caches]
    assert "L1d" in labels and all(n > 0 for _, n in caches)


def test_bench_records_name_the_torch_implementation():
    pytest.importorskip("torch")
    recs = _bench.run_bench(["numba"], ["adam", "rmsprop"], (512,), "float32", rounds=1,
                            max_seconds=0.05)
    assert [r["torch_impl"] for r in recs] == ["torch.optim.Adam fused",
                                               "torch.optim.RMSprop foreach"]


def test_multi_tensor_benchmark_reports_bookkeeping_per_tensor():
    rec = _bench.run_multi_tensor(_bench.many_small_shapes(16, 100), "tiny", rounds=1,
                                  max_seconds=0.5)
    assert {"per_tensor", "multi_tensor", "kernel_only"} <= rec["seconds"].keys()
    assert rec["seconds"]["kernel_only"] > 0 and "multi_tensor" in rec["bookkeeping_us_per_tensor"]
    if "torch_fused" in rec["seconds"]:
        assert rec["fastopt_torch_vs_torch_fused"] > 0


def test_bench_ratios_pair_the_blocks_of_one_round():
    # The machine slows down 3x in round 2, between the kernel's block and the roofline's.
    # Unpaired medians make the roofline 1.5x slower than the kernel; the rounds' own ratios
    # say 0.5 in every round but the one with the change.
    times = {"kernel": [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0], [6.0, 6.0], [6.0, 6.0]],
             "roofline": [[1.0, 1.0], [1.0, 1.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]]}
    assert _bench.medians(times) == {"kernel": 2.0, "roofline": 3.0}
    assert _bench.paired_ratio(times, "roofline", "kernel") == 0.5
