#!/usr/bin/env python3
"""arm64 check (issue #5): do EfficientNet-Lite0's int8 artifacts run, and agree, on arm64?

Exports EfficientNet-Lite0 as int8 ONNX (and int8 .tflite when the tflite exporter is present),
runs each artifact on this x86 host (local runner) and under qemu-user in the arm64 Debian rootfs
(qemu runner: the real aarch64 kernels of onnxruntime / LiteRT), on images of the shared ImageNet
sample that calibration did not see, and reports top-1 agreement between the x86 and arm64 outputs,
and of each with the fp32 PyTorch model. Appends a dated section to benchmarks/RESULTS-targets.md.

Latency under qemu is the emulator's and is printed only as "emulated, not a device figure".

    make arm64-check                       # builds the rootfs (cached), then runs this
    python benchmarks/arm64_check.py [--eval labels.csv[300:400]] [--fresh] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS-targets.md"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True,
                             check=False, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def export(out: Path, fresh: bool) -> Path:
    """int8 ONNX (+ int8 TFLite when that exporter exists), via the CLI, cached in `out`."""
    from edgecompress.exporters import FORMATS

    formats = ["onnx:int8"] + (["tflite:int8"] if "tflite" in FORMATS else [])
    manifest = out / "manifest.json"
    if manifest.is_file() and not fresh:
        have = {(a["format"], a["precision"]) for a in json.loads(manifest.read_text())["artifacts"]}
        if {tuple(f.split(":")) for f in formats} <= have:
            print(f"arm64-check: reusing the export in {out} (--fresh to redo)", file=sys.stderr)
            return out
    cmd = [str(REPO / ".venv" / "bin" / "edgecompress"), "export", "zoo:efficientnet-lite0"]
    for f in formats:
        cmd += ["-f", f]
    cmd += ["--no-validate", "--out", str(out)]
    print("arm64-check: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


def tflite_int8_standin(out: Path, calib: str, fresh: bool) -> Path | None:
    """Full-int8 .tflite of EfficientNet-Lite0 when exporters/tflite.py has not landed yet.

    The recipe of FIELD_NOTES.md (litert-torch PT2E: strict export of the NHWC-wrapped model,
    PT2EQuantizer per-channel symmetric, calibrate, convert). A stand-in for the arm64 check only:
    what it proves is that a LiteRT int8 model runs and agrees on arm64, not that it is the best
    int8 recipe (that is the tflite exporter's job; the check switches to it as soon as it exists).
    """
    path = out / "efficientnet-lite0-int8-standin.tflite"
    if path.is_file() and not fresh:
        return path
    try:
        import litert_torch
        import torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import quantize_pt2e
    except ImportError as e:
        print(f"arm64-check: no tflite exporter and no litert-torch ({e}); skipping TFLite", file=sys.stderr)
        return None
    from edgecompress.data import load_data
    from edgecompress.models import load_model

    spec = load_model("zoo:efficientnet-lite0")
    cal = load_data(calib, "efficientnet-lite", 224, "calibration")
    module = litert_torch.to_channel_last_io(spec.module.eval(), args=[0]).eval()
    example = (torch.from_numpy(np.ascontiguousarray(cal.x[:1].transpose(0, 2, 3, 1))),)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    m = torch.export.export(module, example, strict=True).module()
    m = quantize_pt2e.prepare_pt2e(m, quantizer)
    with torch.no_grad():
        for i in range(len(cal)):
            m(torch.from_numpy(np.ascontiguousarray(cal.x[i:i + 1].transpose(0, 2, 3, 1))))
    m = quantize_pt2e.convert_pt2e(m, fold_quantize=False)
    edge = litert_torch.convert(m, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    edge.export(str(tmp))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    from edgecompress.paths import imagenet_sample

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    labels = imagenet_sample()
    ap.add_argument("--eval", default=f"{labels}[300:400]" if labels else "",
                    help="evaluation images (default: rows 300-399 of the shared sample; "
                         "calibration used rows 0-299)")
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "arm64-check")
    ap.add_argument("--fresh", action="store_true", help="re-export even if cached")
    ap.add_argument("--x86-runs", type=int, default=20)
    ap.add_argument("--no-tflite", action="store_true", help="skip the TFLite stand-in (no exporter)")
    ap.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.name}")
    a = ap.parse_args(argv)

    from edgecompress.data import load_data
    from edgecompress.models import load_model
    from edgecompress.targets.device_report import load_artifacts
    from edgecompress.targets.metrics import classification_metrics, drift
    from edgecompress.targets.profile import get_target
    from edgecompress.targets.runners.local import BenchRequest, LocalRunner
    from edgecompress.targets.runners.qemu import QemuRunner, rootfs_path, rootfs_ready
    from edgecompress.targets.validate import reference_outputs

    profile = get_target("arm64-qemu")
    rootfs = rootfs_path(profile)
    if not rootfs_ready(rootfs):
        print(f"arm64-check: no arm64 rootfs at {rootfs}: run scripts/arm64-rootfs.sh (make arm64-check)",
              file=sys.stderr)
        return 2
    if not a.eval:
        print("arm64-check: the shared ImageNet sample was not found; pass --eval", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    export_dir = export(a.out / "export", a.fresh)
    arts, _ = load_artifacts([export_dir])
    arts = [x for x in arts if x.precision == "int8"]
    standin = False
    if not any(x.format == "tflite" for x in arts) and not a.no_tflite:
        calib = a.eval.rsplit("[", 1)[0] + "[0:100]"  # rows the evaluation does not use
        path = tflite_int8_standin(a.out / "tflite-standin", calib, a.fresh)
        if path is not None:
            from edgecompress.exporters import Artifact, TensorInfo
            from edgecompress.fileio import sha256_file

            arts.append(Artifact(format="tflite", precision="int8", path=path, runtime="litert",
                                 model_name=path.stem, size_bytes=path.stat().st_size,
                                 sha256=sha256_file(path),
                                 inputs=[TensorInfo("input", [1, 224, 224, 3], layout="NHWC")]))
            standin = True

    ds = load_data(a.eval, "efficientnet-lite", 224, "evaluation")
    inputs = a.out / "inputs.npy"
    np.save(inputs, ds.x)
    spec = load_model("zoo:efficientnet-lite0")
    ref = reference_outputs(spec.module, ds, progress=False)
    ref_metrics = classification_metrics(ref, ds.y)
    print(f"arm64-check: {len(ds)} images, fp32 PyTorch top-1 {100 * ref_metrics['top1']:.1f} %",
          file=sys.stderr)

    rows = []
    for art in arts:
        layout = art.inputs[0].layout if art.inputs and art.inputs[0].layout else "NCHW"
        res, outs, wall = {}, {}, {}
        for where, runner, runs, warmup in (("x86", LocalRunner(), a.x86_runs, 3),
                                            ("arm64", QemuRunner(), 3, 1)):
            out = a.out / f"{Path(art.path).stem}.{where}.npy"
            req = BenchRequest(artifact=Path(art.path), runtime=art.runtime, threads=1, cpus=[0],
                               warmup=warmup, runs=runs, inputs=inputs, outputs=out, layout=layout,
                               eval_batch=8, timeout_s=3600)
            t0 = time.perf_counter()
            res[where] = runner.run(req, profile if where == "arm64" else None)
            wall[where] = time.perf_counter() - t0
            outs[where] = np.load(out)
            print(f"arm64-check: {art.format} int8 on {where}: {wall[where]:.0f} s "
                  f"(arch {res[where]['machine']['arch']})", file=sys.stderr)
        row = {
            "format": art.format, "precision": art.precision, "artifact": Path(art.path).name,
            "standin": standin and art.format == "tflite", "layout": layout,
            "size_bytes": art.size_bytes, "sha256": art.sha256, "n": len(ds),
            "x86_vs_arm64": drift(outs["x86"], outs["arm64"]),
            "x86_vs_fp32": drift(ref, outs["x86"]), "arm64_vs_fp32": drift(ref, outs["arm64"]),
            "top1_x86": classification_metrics(outs["x86"], ds.y).get("top1"),
            "top1_arm64": classification_metrics(outs["arm64"], ds.y).get("top1"),
            "bit_identical": bool(np.array_equal(outs["x86"], outs["arm64"])),
            "runtime_x86": res["x86"]["runtime"], "runtime_arm64": res["arm64"]["runtime"],
            "arch_arm64": res["arm64"]["machine"]["arch"],
            "python_arm64": res["arm64"]["machine"]["python"],
            "numpy_arm64": res["arm64"]["machine"]["numpy"],
            "latency_x86_ms": res["x86"]["latency_ms"]["1"]["p50"],
            "latency_kind_arm64": res["arm64"]["latency_kind"],
            "latency_arm64_emulated_ms": res["arm64"]["latency_ms"]["1"]["p50"],
            "wall_s": wall,
        }
        rows.append(row)
    result = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                          "qemu": _qemu_version()},
              "eval": a.eval, "n": len(ds), "fp32_top1": ref_metrics.get("top1"), "rows": rows,
              "command": ("make arm64-check -> " if os.environ.get("MAKELEVEL") else "")
                         + " ".join(["python benchmarks/arm64_check.py", *(
                             shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))])}
    (a.out / "arm64_check.json").write_text(json.dumps(result, indent=2))
    md = to_markdown(result)
    print(md)
    if not a.no_write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + md)
        print(f"arm64-check: appended to {RESULTS}", file=sys.stderr)
    worst = min((r["x86_vs_arm64"].get("top1_agreement", 0.0) for r in rows), default=0.0)
    return 0 if rows and worst >= 0.97 else 1


def _p(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"## arm64 check under qemu-user: EfficientNet-Lite0 int8 ({r['date'][:10]})",
        "",
        f"- date: {r['date']}; machine: {m['cpu']}, {m['cores']} vCPU, load "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg'])} (shared with other jobs); {m['qemu']}",
        f"- command: `{r['command']}`",
        f"- data: {r['n']} images, `{Path(r['eval'].split('[')[0]).parent.name}` rows "
        f"`[{r['eval'].split('[', 1)[1] if '[' in r['eval'] else ':'}` (calibration used rows 0-299); "
        f"fp32 PyTorch top-1 {_p(r['fp32_top1'])} %",
        "- arm64 = Debian bookworm arm64 rootfs (`scripts/arm64-rootfs.sh`) with the aarch64 wheels of "
        "the same versions as x86, run by `targets/runners/qemu.py` through qemu-user (binfmt_misc); "
        "1 thread both sides.",
        "",
        "| format | artifact | x86 runtime | arm64 runtime | top-1 agreement x86 vs arm64 | cosine x86 vs arm64 "
        "| max abs diff | agreement x86 vs fp32 | agreement arm64 vs fp32 | top-1 x86 / arm64 | x86 p50 ms "
        "| arm64 p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        rx, ra = row["runtime_x86"], row["runtime_arm64"]
        d = row["x86_vs_arm64"]
        lines.append(
            f"| {row['format']} int8{' (stand-in¹)' if row.get('standin') else ''} "
            f"| {row['artifact']} ({row['size_bytes'] / 1e6:.1f} MB) "
            f"| {rx['name']} {rx['version']} x86_64 | {ra['name']} {ra['version']} {row['arch_arm64']} "
            f"| **{_p(d.get('top1_agreement'))} %**{' (bit-identical)' if row['bit_identical'] else ''} "
            f"| {d['cosine']:.6f} | {d['max_abs']:.3g} "
            f"| {_p(row['x86_vs_fp32'].get('top1_agreement'))} % | {_p(row['arm64_vs_fp32'].get('top1_agreement'))} % "
            f"| {_p(row['top1_x86'])} / {_p(row['top1_arm64'])} % | {row['latency_x86_ms']:.2f} "
            f"| {row['latency_arm64_emulated_ms']:.0f} (emulated, not a device figure) |")
    if any(row.get("standin") for row in r["rows"]):
        lines += ["", "¹ exporters/tflite.py had not landed: the .tflite is a stand-in made by "
                  "`tflite_int8_standin` in benchmarks/arm64_check.py (litert-torch PT2E, per-channel "
                  "symmetric, calibrated on rows 0-99, NHWC input), only to show a LiteRT int8 model "
                  "runs and agrees on arm64; its accuracy is not the tflite exporter's."]
    lines += [
        "",
        "x86 and arm64 outputs are close but not bit-identical (each ISA has its own int8 kernels); "
        "what must match is the top-1 class. Under qemu-user onnxruntime warns `cpuinfo_initialize "
        "failed` (qemu shows the host's /proc/cpuinfo), so it may pick its baseline aarch64 kernels "
        "rather than the dot-product ones a Pi 5 or phone would use. x86 p50 is 1 thread on a "
        "machine shared with other jobs (see load).",
        "",
        "The arm64 column proves the artifact loads and runs on the aarch64 builds of the runtime and "
        "gives the same answers; its latency is qemu translating aarch64 on this x86 host and says "
        "nothing about a Raspberry Pi or a phone (use the `rpi4` / `rpi5` / `android-arm64` estimates, "
        "or a real device over ssh / adb).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
