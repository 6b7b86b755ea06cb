"""Register, shared-memory and spill figures of the CuPy kernels from ptxas (no GPU needed).

    python benchmarks/ptxas_usage.py [storage|q8] [--arch sm_90]

``storage``: every algorithm's 16-bit instantiations (kernels.cupy.storage_expressions);
``q8``: its 8-bit-state (blockwise) instantiations (kernels.cupy.q8_expressions). Each
algorithm's instantiations are compiled as one unit with nvcc ``-cubin -Xptxas -v``; prints a
Markdown table row per algorithm.
"""

import argparse
import os
import re
import shutil
import subprocess
import tempfile

from fastopt.kernels import cupy as sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="q8", choices=("storage", "q8"))
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args()
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise SystemExit("nvcc is not installed")
    pick = sources.q8_expressions if args.which == "q8" else sources.storage_expressions
    print(f"nvcc -cubin -arch={args.arch} -Xptxas -v, {args.which} instantiations")
    print("| kernel | instantiations | registers | shared bytes | spill bytes |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for name in sorted(sources.EMA):
            exprs = pick(name)
            src = os.path.join(d, f"{name}.cu")
            with open(src, "w") as f:
                f.write(sources.source(name) + "\nvoid* const fastopt_instances[] = {\n"
                        + ",\n".join(f"    (void*)&{e}" for e in exprs) + "\n};\n")
            done = subprocess.run([nvcc, "-cubin", f"-arch={args.arch}", "--std=c++17",
                                   "-diag-suppress=177", "-Xptxas", "-v", "-o", src + ".cubin",
                                   src], capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise SystemExit(done.stderr[-4000:])
            regs = [int(x) for x in re.findall(r"Used (\d+) registers", done.stderr)]
            smem = sorted({int(x) for x in re.findall(r"(\d+) bytes smem", done.stderr)})
            spills = sum(int(a) + int(b) for a, b in re.findall(
                r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr))
            print(f"| {name} | {len(regs)} | {min(regs)}-{max(regs)} | "
                  f"{'-'.join(map(str, smem)) or 0} | {spills} |")


if __name__ == "__main__":
    main()
