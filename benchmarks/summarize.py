"""Print a Markdown table from a pytest-benchmark JSON file of benchmarks/test_cpu_throughput.py.

    python benchmarks/summarize.py benchmarks/results/cpu.json
"""

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
          f"{data['machine_info'].get('cpu', {}).get('count', '?')} cores; "
          f"{data['datetime']}")
    print()
    print("| algorithm | size | median | GB/s | roofline fraction | vs torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "gbps" not in e:
            continue
        torch = f"{e['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in e else "-"
        print(f"| {e['algorithm']} | 2^{e['size'].bit_length() - 1} | "
              f"{e['seconds'] * 1e6:.1f} us | {e['gbps']:.1f} | {e['roofline_fraction']:.2f} | "
              f"{torch} |")


if __name__ == "__main__":
    main(sys.argv[1])
