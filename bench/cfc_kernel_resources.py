"""Registers, spills and shared memory of the persistent CfC kernels for a GPU, on any machine.

    python bench/cfc_kernel_resources.py                          # sm_90 (H100): default shapes and settings
    python bench/cfc_kernel_resources.py --sass /tmp/cfc_sass     # also each kernel's disassembly

Triton compiles for a target GPU without having one (`triton.compile` with a `GPUTarget`), and
`cuobjdump -res-usage` (shipped with Triton) reads what each compiled kernel uses. A stack frame
of kilobytes (registers spilled to local memory) predicted every slow setting measured on the
H100 (bench/NOTES.md: `tf32x3` at H=256, 4 programs per row block at H=256, 32-row blocks at 4
warps in an earlier version), so a setting is worth device time only where this shows little or none.
The numbers are those of the installed Triton: the H100 machine had 3.6 (`pip install
triton==3.6.0 --target DIR` and DIR first on PYTHONPATH reproduces its compiler here); 3.9 allocates
registers differently. The plan is the one a GPU with
`--sms` SMs would get (`cfc_tuning.gpu_plan`); the kernels are compiled as training runs them
(time spans, a mask, an initial state, the trace saved for the backward).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfc_speed import BACKBONE_UNITS, Shape  # noqa: E402
from bench.cfc_step_tiles import PERSISTENT  # noqa: E402
from training.cores import cfc_persistent as cp  # noqa: E402
from training.cores.cfc_tuning import ACT_CODES, MODE_CODES, Knobs, gpu_plan  # noqa: E402

POINTER_TYPES = {"keep_ptr": "*u8", "counter_ptr": "*i32", "prof_ptr": "*i64"}  # the rest are float32


def signature(fn, constexprs: dict) -> dict:
    return {name: "constexpr" if name in constexprs
            else POINTER_TYPES.get(name, "*fp32") if name.endswith("_ptr") else "i32"
            for name in fn.arg_names}


def compile_kernel(fn, constexprs: dict, num_warps: int, num_stages: int, arch: int):
    src = ASTSource(fn=fn, signature=signature(fn, constexprs),
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    options = {"num_warps": num_warps, "num_stages": num_stages, "launch_cooperative_grid": True}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def resources(kernel) -> dict:
    """Registers per thread, stack frame and other local memory (bytes per thread: where spilled
    registers go) and shared memory of a compiled kernel, from `cuobjdump -res-usage` on its cubin."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        out = subprocess.run([str(tool), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", out))
    return {"registers": int(usage["REG"]), "stack": int(usage["STACK"]), "local": int(usage["LOCAL"]),
            "shared": kernel.metadata.shared}


def kernels_for(shape: Shape, knobs: Knobs, precision: str, sms: int):
    p = gpu_plan(shape.batch, shape.units, BACKBONE_UNITS, sms, knobs)
    launch = cp._launch_kwargs(p, shape.units, BACKBONE_UNITS)
    num_warps, num_stages = launch.pop("num_warps"), launch.pop("num_stages")
    launch.pop("launch_cooperative_grid", None)
    common = dict(launch, ACT=ACT_CODES["lecun_tanh"], MODE=MODE_CODES["default"], PREC=precision, HAS_DT=True,
                  HAS_KEEP=True, PROFILE=False)
    return p, num_warps, num_stages, {"forward": (cp._forward, dict(common, SAVE=True, HAS_H0=True)),
                                      "backward": (cp._backward, common)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=Shape.parse,
                        default=[Shape.parse(s) for s in ("256x72x41x128", "256x336x41x256")])
    parser.add_argument("--settings", nargs="+", default=list(PERSISTENT), choices=list(PERSISTENT),
                        help="bench/cfc_step_tiles.py's persistent settings (default: all)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for the H100")
    parser.add_argument("--sms", type=int, default=132, help="SMs of the GPU the plan is made for")
    parser.add_argument("--sass", type=Path, help="write each kernel's disassembly into this folder")
    args = parser.parse_args(argv)
    rows = []
    for shape in args.shapes:
        for name in args.settings:
            knobs, precision = PERSISTENT[name]
            p, warps, stages, kernels = kernels_for(shape, knobs, precision, args.sms)
            for which, (fn, constexprs) in kernels.items():
                kernel = compile_kernel(fn, constexprs, warps, stages, args.arch)
                row = {"shape": str(shape), "setting": name, "kernel": which, "columns": p.columns,
                       "block_b": p.block_b, "warps": warps, "hold": p.hold, **resources(kernel)}
                rows.append(row)
                print(f"{shape}  {name:<20} {which:<8} {row['registers']:>3} registers  {row['stack']:>5} B stack"
                      f"  {row['local']:>5} B local  {row['shared'] // 1024:>4} KiB shared", flush=True)
                if args.sass:
                    args.sass.mkdir(parents=True, exist_ok=True)
                    stem = f"{shape.batch}x{shape.steps}x{shape.units}_{name.replace(' ', '_')}_{which}"
                    cubin = args.sass / f"{stem}.cubin"
                    cubin.write_bytes(kernel.asm["cubin"])
                    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
                    sass = subprocess.run([str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True).stdout
                    cubin.with_suffix(".sass").write_text(sass)
    return rows


if __name__ == "__main__":
    main()
