"""Multi-tensor Adam: fastopt.Adam and fastopt.torch.Adam (one launch per group) vs one
adam_step call per tensor vs torch fused, and the kernel launch alone.

    python benchmarks/multi_tensor.py [--json benchmarks/results/multi-tensor-2core.json]

Two parameter sets: 2048 tensors of 512 elements (many small tensors) and GPT-2 small's 148
tensor shapes (124M parameters). Medians of side-by-side timings in one process. The Python
bookkeeping per tensor is a step's median minus the kernel launch's, over the tensor count.
"""

import argparse
import json
import os
import platform

from fastopt import _bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the records to this file")
    args = ap.parse_args()
    records = []
    for name, shapes in (("many-small (2048 x 512)", _bench.many_small_shapes()),
                         ("gpt2-small (148 tensors)", _bench.gpt2_small_shapes())):
        r = _bench.run_multi_tensor(shapes, name)
        records.append(r)
        s = r["seconds"]

        def ms(key: str) -> str:
            return f"{s[key] * 1e3:8.2f} ms" if key in s else "       - ms"

        print(f"{name}: per-tensor {ms('per_tensor')}, kernel only {ms('kernel_only')}, "
              f"torch fused {ms('torch_fused')}", flush=True)
        for key, label, vs in (("multi_tensor", "fastopt.Adam", "multi_vs_torch_fused"),
                               ("fastopt_torch", "fastopt.torch.Adam",
                                "fastopt_torch_vs_torch_fused")):
            if key in s:
                ratio = f"{r[vs]:.2f}x torch fused" if vs in r else "-"
                print(f"  {label:19s} {ms(key)}  {ratio}, bookkeeping "
                      f"{r['bookkeeping_us_per_tensor'][key]:.2f} us/tensor", flush=True)
    if args.json:
        meta = {"machine": f"{platform.processor() or platform.machine()}, "
                           f"{os.cpu_count()} cores", "command": "python "
                "benchmarks/multi_tensor.py --json " + args.json}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
