"""`fastopt demo` end to end: digits by default, MNIST IDX files, the JSON and the PNG."""

import gzip
import json
import re

import numpy as np
import pytest

from fastopt import _demo, cli

pytest.importorskip("sklearn")


def run(tmp_path, *extra):
    out = tmp_path / "demo.json"
    rc = cli.main(["demo", "--json", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_defaults_reach_the_accuracy_target_for_adam_and_rmsprop(tmp_path):
    records = run(tmp_path, "--optimizers", "adam,rmsprop")
    for r in records:
        assert r["test_accuracy"] >= 0.95, r["optimizer"]
        assert r["dataset"] == "digits"


def test_short_demo_all_optimizers_loss_decreases_and_png_is_written(tmp_path, capsys):
    png = tmp_path / "curves.png"
    records = run(tmp_path, "--epochs", "3", "--plot", str(png))
    assert [r["optimizer"] for r in records] == list(_demo.OPTIMIZERS)
    for r in records:
        assert set(r) >= {"optimizer", "test_accuracy", "final_train_loss", "seconds"}
        assert r["train_loss"][-1] < r["train_loss"][0], r["optimizer"]
        assert r["test_accuracy"] > 0.6, r["optimizer"]  # chance is 0.1
        assert 0 < r["optimizer_seconds"] < r["seconds"]
    out, err = capsys.readouterr()
    assert "adadelta" in out and "test accuracy" in out      # the table
    assert "epoch   3/3" in err                               # progress
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    plt = pytest.importorskip("matplotlib.pyplot")
    image = plt.imread(str(png))
    assert image.shape[0] > 200 and image.shape[1] > 400


def test_same_seed_same_run_and_overrides(tmp_path):
    a = run(tmp_path, "--optimizers", "momentum", "--epochs", "2", "--seed", "3")
    b = run(tmp_path, "--optimizers", "momentum", "--epochs", "2", "--seed", "3")
    assert a[0]["train_loss"] == b[0]["train_loss"]
    c = run(tmp_path, "--optimizers", "momentum", "--epochs", "2", "--seed", "3",
            "--set", "momentum.lr=0.001")
    assert c[0]["hyperparameters"]["lr"] == 0.001
    assert c[0]["train_loss"] != a[0]["train_loss"]


def test_reference_backend_gives_the_same_curves(tmp_path):
    a = run(tmp_path, "--optimizers", "adam", "--epochs", "2")
    b = run(tmp_path, "--optimizers", "adam", "--epochs", "2", "--backend", "numpy")
    np.testing.assert_allclose(a[0]["train_loss"], b[0]["train_loss"], rtol=1e-4)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    params = [p.astype(np.float64) for p in _demo.init_params(5, 4, 3, seed=1)]
    params[1] += 0.1
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    _, grads, _ = _demo.loss_and_grads(params, x, y)
    for p, g in zip(params, grads):
        for i in range(p.size):
            old = p.flat[i]
            p.flat[i] = old + 1e-6
            up = _demo.loss_and_grads(params, x, y, need_grads=False)[0]
            p.flat[i] = old - 1e-6
            down = _demo.loss_and_grads(params, x, y, need_grads=False)[0]
            p.flat[i] = old
            assert g.flat[i] == pytest.approx((up - down) / 2e-6, abs=1e-5)


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def fake_mnist(folder, n_train=200, n_test=50):
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    # Learnable: each class lights its own block of pixels.
    def images(y):
        x = rng.integers(0, 30, (len(y), 28, 28))
        for k, label in enumerate(y):
            x[k, label * 2:label * 2 + 3, :] = 255
        return x
    write_idx(folder / "train-images-idx3-ubyte.gz", images(ytr), gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", ytr)
    write_idx(folder / "t10k-images-idx3-ubyte", images(yte))
    write_idx(folder / "t10k-labels-idx1-ubyte", yte)


def test_mnist_from_idx_files(tmp_path):
    fake_mnist(tmp_path)
    records = run(tmp_path, "--mnist", str(tmp_path), "--optimizers", "adam", "--epochs", "5")
    assert records[0]["dataset"] == "mnist"
    assert records[0]["test_accuracy"] > 0.9


def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_mnist_missing_or_malformed_files_are_clear_errors(tmp_path, capsys):
    assert re.search("train-images-idx3-ubyte .* not found",
                     _error(capsys, ["demo", "--mnist", str(tmp_path)]))
    fake_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    assert "truncated or corrupt" in _error(capsys, ["demo", "--mnist", str(tmp_path)])
    labels.write_bytes(b"\x00\x00\x0d\x01" + bytes(10))
    assert "not an IDX file" in _error(capsys, ["demo", "--mnist", str(tmp_path)])


@pytest.mark.parametrize("args,msg", [
    (["--optimizers", "nosuch"], "unknown optimizer 'nosuch'"),
    (["--set", "adam.lr"], "invalid 'adam.lr'"),
    (["--set", "adam.lr=-1", "--optimizers", "adam"], "adam: Invalid lr: -1.0"),
    (["--set", "adam.betas=0.9", "--optimizers", "adam"], "adam: Invalid betas"),
    (["--epochs", "0"], "argument --epochs: 0 is too small"),
])
def test_bad_arguments(args, msg, capsys):
    assert msg in _error(capsys, ["demo", *args])


def test_plot_tells_every_optimizer_apart_and_shows_test_accuracy():
    """Coinciding curves (momentum/Nesterov, Adam/AdamW) stay visible: each optimizer has its
    own line style and marker pair; a third panel has the test-accuracy curves."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    same = dict(train_loss=[1.0, 0.5, 0.2], test_loss=[1.1, 0.6, 0.3],
                test_accuracy_curve=[0.5, 0.8, 0.9])
    results = [_demo.Result(name, {}, **same) for name in _demo.OPTIMIZERS]
    fig = _demo.figure(results, "digits")
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == [
            "train loss (digits)", "test loss (digits)", "test accuracy (digits)"]
        for ax in axes:
            lines = ax.get_lines()
            assert len(lines) == len(results)
            styles = {(ln.get_linestyle(), ln.get_marker(), ln.get_color()) for ln in lines}
            assert len(styles) == len(results)
        assert list(axes[2].get_lines()[0].get_ydata()) == [0.5, 0.8, 0.9]
        legend = [t.get_text() for t in axes[2].get_legend().get_texts()]
        assert legend == list(_demo.OPTIMIZERS)
    finally:
        plt.close(fig)


def test_bf16_training_with_stochastic_rounding_kahan_or_master_weights_matches_float32(
        tmp_path):
    """Issue 14's quality check: Adam and AdamW on bfloat16 parameters and gradients reach
    float32's test accuracy within 0.5 points when small updates are kept (stochastic
    rounding, Kahan compensation, master weights); plain round-to-nearest does measurably
    worse (its final training loss is several times float32's), so the check can fail."""
    base = {r["optimizer"]: r for r in run(tmp_path, "--optimizers", "adam,adamw")}
    nearest = run(tmp_path, "--optimizers", "adam,adamw", "--dtype", "bfloat16")
    for r in nearest:
        assert r["final_train_loss"] > 2 * base[r["optimizer"]]["final_train_loss"]
    for extra in (["--param-rounding", "stochastic"], ["--param-rounding", "kahan"],
                  ["--master-weights"]):
        for r in run(tmp_path, "--optimizers", "adam,adamw", "--dtype", "bfloat16", *extra):
            gap = base[r["optimizer"]]["test_accuracy"] - r["test_accuracy"]
            assert gap <= 0.005, (extra, r["optimizer"], r["test_accuracy"])


def test_8bit_states_match_float32(tmp_path):
    """Issue 14's quality check for 8-bit states: Adam and AdamW with blockwise 8-bit states
    of both formats (the 64 x 128 weight matrix; the smaller tensors keep float32 states, as
    below min_8bit_size) reach float32's test accuracy within 0.5 points."""
    base = {r["optimizer"]: r for r in run(tmp_path, "--optimizers", "adam,adamw")}
    for fmt in ("dynamic", "fp8"):
        for r in run(tmp_path, "--optimizers", "adam,adamw", "--state-dtype", "8bit",
                     "--state-format", fmt):
            gap = base[r["optimizer"]]["test_accuracy"] - r["test_accuracy"]
            assert gap <= 0.005, (fmt, r["optimizer"], r["test_accuracy"])


def test_demo_storage_flags_need_16bit_parameters(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--optimizers", "adam", "--master-weights"])
    assert "apply to 16-bit parameters" in capsys.readouterr().err
