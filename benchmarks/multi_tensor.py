"""Multi-tensor Adam: one launch per group vs one call per tensor vs torch fused.

    python benchmarks/multi_tensor.py [--json benchmarks/results/multi-tensor-2core.json]

Two parameter sets: 2048 tensors of 512 elements (many small tensors) and GPT-2 small's 148
tensor shapes (124M parameters). Medians of side-by-side timings in one process.
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
        torch_ms = f"{s['torch_fused'] * 1e3:9.2f}" if "torch_fused" in s else "        -"
        vs_torch = f"{r['multi_vs_torch_fused']:.2f}x" if "multi_vs_torch_fused" in r else "-"
        print(f"{name:26s} per-tensor {s['per_tensor'] * 1e3:9.2f} ms  multi-tensor "
              f"{s['multi_tensor'] * 1e3:9.2f} ms  torch fused {torch_ms} ms  "
              f"multi/per-tensor {r['multi_vs_per_tensor']:.2f}x  multi/torch {vs_torch}",
              flush=True)
    if args.json:
        meta = {"machine": f"{platform.processor() or platform.machine()}, "
                           f"{os.cpu_count()} cores", "command": "python "
                "benchmarks/multi_tensor.py --json " + args.json}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
