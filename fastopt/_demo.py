"""``fastopt demo``: train one small network with every optimizer and compare them.

The comparison the seed documents make (loss curves and accuracy per optimizer), on real data:
scikit-learn's handwritten digits (8x8 images, shipped inside scikit-learn) by default, or
MNIST from local IDX files. The model is a NumPy MLP (inputs-128-10, ReLU, softmax
cross-entropy) trained with shuffled mini-batches; every optimizer starts from the same weights
and sees the same batches in the same order. The updates are fastopt's optimizer classes.
"""

from __future__ import annotations

import gzip
import inspect
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import optim
from ._specs import SPECS

# name -> (optimizer class, default hyperparameters). Tuned once on digits; overridable.
# Every algorithm with its spec's demo settings, and SGD's two momentum variants after SGD.
_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "sgd": [("momentum", {"lr": 0.02, "momentum": 0.9}),
            ("nesterov", {"lr": 0.02, "momentum": 0.9, "nesterov": True})],
}
OPTIMIZERS: dict[str, tuple[type[optim.Optimizer], dict[str, Any]]] = {}
for _name, _spec in SPECS.items():
    _cls = getattr(optim, _spec.torch_class)
    OPTIMIZERS[_name] = (_cls, dict(_spec.demo_options))
    for _variant, _options in _VARIANTS.get(_name, []):
        OPTIMIZERS[_variant] = (_cls, _options)
SPLIT_SEED = 0  # the train/test split is fixed, whatever --seed says
TEST_FRACTION = 0.2


@dataclass
class Data:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits() -> Data:
    """scikit-learn's digits, a fixed 80/20 split, standardized with training statistics."""
    try:
        from sklearn.datasets import load_digits as sk_digits  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit("fastopt demo: the digits data comes with scikit-learn, which is not "
                         "installed (pip install 'fastopt[demo]', or use --mnist DIR)") from None
    x, y = sk_digits(return_X_y=True)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return _standardized("digits", x[train], y[train], x[test], y[test])


def _standardized(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray) -> Data:
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels (always blank) stay zero
    f = np.float32
    return Data(name, ((x_train - mean) / std).astype(f), y_train.astype(np.int64),
                ((x_test - mean) / std).astype(f), y_test.astype(np.int64))


_IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
              "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), plain or gzipped."""
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, dims = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype_code != 0x08 or dims != ndim:
        raise ValueError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic "
                         f"{data[:4].hex()}, expected 00000{8}0{ndim})")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(body)} data bytes for shape {shape} (expected "
                         f"{int(np.prod(shape))}; truncated or corrupt)")
    return np.frombuffer(body, np.uint8).reshape(shape)


def load_mnist(folder: str) -> Data:
    """MNIST from its four IDX files (optionally .gz) in ``folder``; its own train/test split."""
    found = {}
    for key, base in _IDX_FILES.items():
        for candidate in (base, base + ".gz", base.replace("-idx", ".idx")):
            if os.path.exists(os.path.join(folder, candidate)):
                found[key] = os.path.join(folder, candidate)
                break
        else:
            raise ValueError(f"{folder}: {base} (or {base}.gz) not found")
    try:
        xtr = read_idx(found["train_images"], 3)
        ytr = read_idx(found["train_labels"], 1)
        xte = read_idx(found["test_images"], 3)
        yte = read_idx(found["test_labels"], 1)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    for x, y, what in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if len(x) != len(y):
            raise ValueError(f"{folder}: {len(x)} {what} images but {len(y)} labels")
        if y.size and y.max() > 9:
            raise ValueError(f"{folder}: {what} label {y.max()} > 9")
    return _standardized("mnist", _flat(xtr), ytr, _flat(xte), yte)


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The model: a two-layer MLP in NumPy.


def init_params(n_in: int, n_hidden: int, n_out: int, seed: int) -> list[np.ndarray]:
    """He-initialised weights, zero biases: [W1, b1, W2, b2], float32."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, n_hidden)) * np.sqrt(2.0 / n_in)
    w2 = rng.standard_normal((n_hidden, n_out)) * np.sqrt(2.0 / n_hidden)
    return [a.astype(np.float32) for a in (w1, np.zeros(n_hidden), w2, np.zeros(n_out))]


def loss_and_grads(params: list[np.ndarray], x: np.ndarray, y: np.ndarray,
                   need_grads: bool = True) -> tuple[float, list[np.ndarray], np.ndarray]:
    """Mean softmax cross-entropy, its gradients, and the logits."""
    w1, b1, w2, b2 = params
    h_pre = x @ w1 + b1
    h = np.maximum(h_pre, 0)
    logits = h @ w2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    n = len(y)
    loss = float(-log_p[np.arange(n), y].mean())
    if not need_grads:
        return loss, [], logits
    d_logits = np.exp(log_p)
    d_logits[np.arange(n), y] -= 1
    d_logits /= n
    gw2 = h.T @ d_logits
    gb2 = d_logits.sum(axis=0)
    dh = (d_logits @ w2.T) * (h_pre > 0)
    gw1 = x.T @ dh
    gb1 = dh.sum(axis=0)
    grads = [np.ascontiguousarray(g, dtype=np.float32) for g in (gw1, gb1, gw2, gb2)]
    return loss, grads, logits


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    loss, _, logits = loss_and_grads(params, x, y, need_grads=False)
    return loss, float((logits.argmax(axis=1) == y).mean())


@dataclass
class Result:
    optimizer: str
    hyperparameters: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)  # per epoch, on the training set
    test_loss: list[float] = field(default_factory=list)
    test_accuracy_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    optimizer_seconds: float = 0.0

    def record(self, backend: str, dataset: str) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "dataset": dataset, "backend": backend,
                "hyperparameters": self.hyperparameters,
                "test_accuracy": self.test_accuracy_curve[-1],
                "final_train_loss": self.train_loss[-1], "final_test_loss": self.test_loss[-1],
                "seconds": self.seconds, "optimizer_seconds": self.optimizer_seconds,
                "train_loss": self.train_loss, "test_loss": self.test_loss,
                "test_accuracy_curve": self.test_accuracy_curve}


def train(name: str, hyper: dict[str, Any], data: Data, *, epochs: int, batch_size: int,
          hidden: int, seed: int, backend: str,
          progress: Callable[[str], None] | None = None, dtype: str = "float32",
          storage: dict[str, Any] | None = None) -> Result:
    """Train the MLP with one optimizer. Same seed: same initial weights and batch order.

    ``dtype``: the parameters' and gradients' storage ("bfloat16", "float16": the network
    computes in float32 on widened copies, its gradients are rounded to ``dtype``);
    ``storage``: the optimizer's storage options (state_dtype, master_weights,
    param_rounding, seed)."""
    cls = OPTIMIZERS[name][0]
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    narrow = None
    if dtype != "float32":
        from ._bench import numpy_dtype

        narrow = numpy_dtype(dtype)
    params = [p if narrow is None else p.astype(narrow)
              for p in init_params(data.x_train.shape[1], hidden, n_classes, seed)]
    wide: Callable[[list[np.ndarray]], list[np.ndarray]] = (
        (lambda ps: ps) if narrow is None else (lambda ps: [p.astype(np.float32) for p in ps]))
    storage = storage or {}
    opt = cls(params, backend=backend, **hyper, **storage)
    # Compile (or load from Numba's cache) this optimizer's kernels outside the timings.
    cls([p.copy() for p in params], backend=backend, **hyper, **storage).step(
        [np.zeros_like(p) for p in params])
    order_rng = np.random.default_rng(seed + 1)
    result = Result(name, dict(hyper))
    n = len(data.y_train)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = order_rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            _, grads, _ = loss_and_grads(wide(params), data.x_train[idx], data.y_train[idx])
            if narrow is not None:
                grads = [g.astype(narrow) for g in grads]
            t0 = time.perf_counter()
            opt.step(grads)
            result.optimizer_seconds += time.perf_counter() - t0
        # Schedule-Free is evaluated at its average x (eval mode), then trains on at y.
        to_eval, to_train = getattr(opt, "eval", None), getattr(opt, "train", None)
        if to_eval is not None:
            to_eval()
        train_loss, _ = evaluate(wide(params), data.x_train, data.y_train)
        test_loss, test_acc = evaluate(wide(params), data.x_test, data.y_test)
        if to_train is not None:
            to_train()
        result.train_loss.append(train_loss)
        result.test_loss.append(test_loss)
        result.test_accuracy_curve.append(test_acc)
        if progress is not None:
            progress(f"{name:18s} epoch {epoch + 1:3d}/{epochs}  train loss {train_loss:.4f}  "
                     f"test loss {test_loss:.4f}  test accuracy {test_acc:.4f}")
    result.seconds = time.perf_counter() - start
    return result


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["adam.lr=0.01", "sgd.momentum=0.5"]`` -> {"adam": {"lr": 0.01}, ...}.

    Raises ValueError naming the item that is not ``OPTIMIZER.NAME=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        opt_name, dot, hp = key.partition(".")
        if not sep or not dot or opt_name not in OPTIMIZERS or not hp:
            raise ValueError(f"invalid {item!r} (expected OPTIMIZER.NAME=VALUE with OPTIMIZER "
                             f"one of {', '.join(OPTIMIZERS)})")
        parsed: Any
        try:
            if value.lower() in ("true", "false"):
                parsed = value.lower() == "true"
            elif "," in value:
                parsed = tuple(float(v) for v in value.split(","))
            else:
                parsed = float(value)
        except ValueError:
            raise ValueError(f"invalid value in {item!r} (expected a number, true/false, "
                             f"or numbers separated by commas)") from None
        out.setdefault(opt_name, {})[hp] = parsed
    return out


def hyperparameter_names(name: str) -> list[str]:
    """The hyperparameters optimizer ``name`` of the demo takes (its class's keywords)."""
    params = inspect.signature(OPTIMIZERS[name][0]).parameters
    return [p for p in params if p not in ("params", "backend", "multi_tensor")]


def check_hyperparameters(names: list[str], overrides: dict[str, dict[str, Any]]) -> None:
    """Reject, before any training, overrides the chosen optimizers would refuse.

    Raises ValueError naming the optimizer and the hyperparameter.
    """
    for name, hyper in overrides.items():
        if name not in names:
            raise ValueError(f"{name}.{next(iter(hyper))}: optimizer {name!r} is not among "
                             f"--optimizers ({', '.join(names)})")
        allowed = hyperparameter_names(name)
        for hp in hyper:
            if hp not in allowed:
                raise ValueError(f"{name}.{hp}: {name} has no hyperparameter {hp!r} (expected "
                                 f"one of {', '.join(allowed)})")
        try:
            OPTIMIZERS[name][0]([np.zeros(1, np.float32)],
                                **{**OPTIMIZERS[name][1], **hyper})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None


def format_table(results: list[Result]) -> str:
    w = max([10, *[len(r.optimizer) + 1 for r in results]])
    lines = [f"{'optimizer':{w}s} {'final train loss':>16s} {'test loss':>9s} "
             f"{'test accuracy':>13s} {'optimizer s':>11s} {'total s':>8s} {'share':>6s}"]
    for r in results:
        lines.append(f"{r.optimizer:{w}s} {r.train_loss[-1]:16.4f} {r.test_loss[-1]:9.4f} "
                     f"{r.test_accuracy_curve[-1]:13.4f} {r.optimizer_seconds:11.3f} "
                     f"{r.seconds:8.3f} {r.optimizer_seconds / r.seconds:6.1%}")
    return "\n".join(lines)


# Distinct line style and marker per optimizer: curves that coincide (momentum and Nesterov,
# Adam and AdamW on this problem) stay visible on top of each other.
_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "v"), ("-", "D"), ("--", "x"),
           (":", "P"), ("-.", "*")]


def plot(results: list[Result], path: str, dataset: str) -> None:
    """Write :func:`figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(results, dataset)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(results: list[Result], dataset: str) -> Any:
    """Train loss, test loss and test accuracy of every optimizer, one panel each."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("fastopt demo --plot needs matplotlib (pip install "
                         "'fastopt[demo]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    n_epochs = max(len(r.train_loss) for r in results)
    every = max(1, n_epochs // 10)  # about ten markers per curve
    for i, r in enumerate(results):
        epochs = np.arange(1, len(r.train_loss) + 1)
        linestyle, marker = _STYLES[i % len(_STYLES)]
        color = f"C{i % 10}"
        style = dict(label=r.optimizer, color=color, linestyle=linestyle, marker=marker,
                     markevery=(i % every, every), markersize=5, linewidth=1.4, alpha=0.9)
        axes[0].plot(epochs, r.train_loss, **style)
        axes[1].plot(epochs, r.test_loss, **style)
        axes[2].plot(epochs, r.test_accuracy_curve, **style)
    from matplotlib.ticker import MaxNLocator

    for ax, title in zip(axes, ("train loss", "test loss", "test accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title} ({dataset})")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_ylabel("softmax cross-entropy")
    axes[2].set_ylabel("fraction correct")
    axes[2].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
