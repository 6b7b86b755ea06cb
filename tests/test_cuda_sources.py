"""The CuPy backend's CUDA C++ sources compile with nvcc, for every instantiation it can request.

No GPU needed: nvcc emits PTX for sm_80 and sm_90. Skipped where nvcc is not installed. The
PTX is also read: a float32 kernel must not contain float64 arithmetic (a stray double literal
or a double math function would put it there), and the vector build must use vector loads.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fastopt.kernels import cupy as sources

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")

ARCHS = ("sm_80", "sm_90")
NAMES = (*sources.FLAGS, "roofline")
F64 = re.compile(r"\.f64\b")


def _expressions(name: str, dtype: str) -> list[str]:
    if name == "roofline":
        return [sources.roofline_expression(dtype, vec, n)
                for vec in (1, sources.TYPES[dtype][2]) for n in range(4)]
    return sources.all_expressions(name, dtype)


def compile_ptx(name: str, dtype: str, arch: str, tmp_path, exprs: list[str] | None = None
                ) -> tuple[str, list[str]]:
    """PTX of ``name.cu`` as the backend hands it to NVRTC, with every instantiation forced
    (by default every one of ``dtype`` with all arrays of that dtype)."""
    exprs = exprs or _expressions(name, dtype)
    unit = tmp_path / f"{name}_{dtype}.cu"
    # Taking each kernel's address instantiates it, as NVRTC's name expressions do.
    unit.write_text(sources.source(name) + "\nvoid* const fastopt_instances[] = {\n"
                    + ",\n".join(f"    (void*)&{e}" for e in exprs) + "\n};\n")
    ptx = tmp_path / f"{name}_{dtype}_{arch}.ptx"
    cmd = [NVCC, "-ptx", f"-arch={arch}", "--std=c++17", "-diag-suppress=177",
           "-o", str(ptx), str(unit)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return ptx.read_text(), exprs


# sm_90 in the default run; the older architecture (the same source, another target) slow.
@pytest.mark.parametrize("arch", [a if a == ARCHS[-1] else pytest.param(a, marks=pytest.mark.slow)
                                  for a in ARCHS])
@pytest.mark.parametrize("dtype", sorted(sources.TYPES))
@pytest.mark.parametrize("name", NAMES)
def test_sources_compile(name, dtype, arch, tmp_path):
    ptx, exprs = compile_ptx(name, dtype, arch, tmp_path)
    entries = re.findall(r"^\.visible \.entry (\S+)\(", ptx, re.MULTILINE)
    assert len(entries) == len(exprs), (len(entries), len(exprs))
    if dtype == "float32":
        bad = [line.strip() for line in ptx.splitlines() if F64.search(line)]
        assert not bad, f"float64 arithmetic in a float32 kernel: {bad[:5]}"
        assert re.search(r"ld\.global(\.nc)?\.v4\.f32", ptx), "no 16-byte vector loads"
    else:
        assert F64.search(ptx), "a float64 kernel without float64 arithmetic"
        assert re.search(r"ld\.global(\.nc)?\.v2\.f64", ptx), "no 16-byte vector loads"


def _float32_ptx(name: str, tag: str, exprs: list[str], tmp_path) -> str:
    """The PTX of float-math instantiations ``exprs`` for sm_90: one entry each, no float64
    instruction."""
    ptx, _ = compile_ptx(name, tag, ARCHS[-1], tmp_path, exprs)
    entries = re.findall(r"^\.visible \.entry (\S+)\(", ptx, re.MULTILINE)
    assert len(entries) == len(exprs), (len(entries), len(exprs))
    bad = [line.strip() for line in ptx.splitlines() if F64.search(line)]
    assert not bad, f"float64 arithmetic in a float32 kernel: {bad[:5]}"
    return ptx


@pytest.mark.parametrize("name", sorted(sources.EMA))
def test_16bit_storage_compiles(name, tmp_path):
    """The 16-bit instantiations (every storage type in every role, each parameter store,
    stochastic rounding) compile, do float math only, and load 16-bit packs whole."""
    ptx = _float32_ptx(name, "storage", sources.storage_expressions(name), tmp_path)
    # Four bf16/f16 values in one 8-byte load (a Pack<bf16, 4>).
    assert re.search(r"ld\.global(\.nc)?\.(v4\.u16|v2\.u32|u64|b64|v4\.b16|v2\.b32)", ptx), \
        "no 8-byte loads of 16-bit packs"


def test_f64_check_catches_a_double_literal(tmp_path):
    """The check above can fail: a float kernel multiplied by 0.1 (a double) shows .f64."""
    unit = tmp_path / "bad.cu"
    unit.write_text("template <typename T> __global__ void k(T* a) { a[0] = a[0] * 0.1; }\n"
                    "void* const inst = (void*)&k<float>;\n")
    ptx = tmp_path / "bad.ptx"
    subprocess.run([NVCC, "-ptx", "-arch=sm_80", "-diag-suppress=177", "-o", str(ptx),
                    str(unit)], check=True, capture_output=True, timeout=300)
    assert F64.search(ptx.read_text())


def test_every_source_names_its_rule():
    """Each kernel's math is the rule of the same name: the sources say which, and exist."""
    from fastopt.kernels import rules

    for name in sources.FLAGS:
        text = sources.source(name)
        assert f"kernels/rules.py `{name}`" in text or f"kernels/rules.py\n// `{name}`" in text
        assert hasattr(rules, name)


# Four algorithms of other state shapes by default (three states; three with momentum and
# centering; a parameter-valued state kept in float32; one state), the rest slow (CI time).
@pytest.mark.parametrize("name", [
    n if n in ("adam", "rmsprop", "schedulefree_adamw", "lion") else
    pytest.param(n, marks=pytest.mark.slow) for n in sorted(sources.EMA)])
def test_8bit_states_compile(name, tmp_path):
    """The blockwise 8-bit instantiations (sources.q8_expressions) compile, do float math
    only, synchronise their blocks, and keep everything in registers (ptxas: no spills)."""
    exprs = sources.q8_expressions(name)
    ptx = _float32_ptx(name, "q8", exprs, tmp_path)
    assert "bar.sync" in ptx, "no block barrier in a blockwise kernel"
    done = subprocess.run([NVCC, "-cubin", f"-arch={ARCHS[-1]}", "-Xptxas", "-v", "-o",
                           str(tmp_path / "q8.cubin"), str(tmp_path / f"{name}_q8.cu")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr)
    assert len(spills) == len(exprs), done.stderr[-2000:]
    assert all(s == ("0", "0") for s in spills), done.stderr[-2000:]
