"""Render a Report as Markdown (for PRs and CI logs) and self-contained HTML (for people)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from edgecompress.errors import on_surface, option, say
from edgecompress.report.model import Report


def _num(v: Any) -> TypeGuard[float]:
    """A finite number (a reloaded report holds null where NaN was; a collapsed encoder's Spearman
    is NaN)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pct(v: float | None) -> str:
    if not _num(v):
        return "—"
    text = f"{100 * v:.1f}"
    # 0.9995 rounds to "100.0": it read as "identical" when a sample differed
    return ">99.9" if text == "100.0" and v < 1 else text


def _sig3(v: float) -> str:
    """Three significant digits, positional, trailing zeros kept (0.0340, 0.500, 12.3, 1230).
    numpy's format_float_positional dropped a digit on a carry (0.03396 -> "0.034", next to
    "0.0302") and gave "0.50" for 0.5: rounded first, then the decimals follow the rounded value."""
    if not _num(v) or v == 0:
        return "0" if v == 0 else "—"
    r = float(f"{v:.3g}")
    return f"{r:.{max(0, 2 - math.floor(math.log10(abs(r))))}f}"


def _ms(v: float) -> str:
    """Two decimals, three significant digits under 1 ms (0.04 vs 0.03 hid a 1.3x difference),
    trailing zeros kept so a column lines up (0.0350, 1.00)."""
    if abs(v) >= 1:
        return f"{v:.2f}"
    return _sig3(v)


def size_text(n: float) -> str:
    """Bytes in kB under 1 MB, else MB (10^3 / 10^6 B, as the notes say): "0.01 MB" hid 14.6 kB
    and made a 4x smaller step look like rounding."""
    if abs(n) < 999.5:
        return f"{n:.0f} B"
    return f"{n / 1e3:.1f} kB" if abs(n) < 999_950 else f"{n / 1e6:.2f} MB"


def shown_as_percent(metric: str) -> bool:
    """A fraction (0-1) the reports show as a percentage: accuracy and top-1 agreement, by
    baseline label or gate path (the gates' range check asks the same question)."""
    return metric in ("top-1", "top-5", "top-1 agreement", "drift.top1_agreement") \
        or (metric.startswith("metrics.") and metric.rsplit(".", 1)[-1].startswith(("top", "acc")))


def metric_value(metric: str, v: Any) -> str:
    """A value in the unit of its metric, for regression lines and gate values: `.4g` printed
    sizes as 8.101e+04 and latencies without a unit. `metric` is a baseline label ("latency p50",
    "size", "peak memory", "top-1", ...) or a gate path ("size_bytes", "latency_ms.p50",
    "latency_by_batch.8.throughput_per_s", "memory_mb.peak_rss", "drift.top1_agreement", ...)."""
    if not _num(v):
        return str(v)
    last = metric.rsplit(".", 1)[-1]
    if metric in ("size", "size_bytes"):
        return size_text(v)
    if last == "throughput_per_s":
        return f"{_sig3(v)} /s"
    if metric.startswith(("latency", "latency_ms.", "latency_by_batch.")):
        return f"{_sig3(v)} ms"
    if metric == "peak memory" or metric.startswith("memory_mb."):
        return f"{v:.1f} MiB"  # VmHWM kB / 1024 (targets/bench.py), benchmark_model's KB / 1024
    if shown_as_percent(metric):
        return f"{100 * v:.2f} %"  # two decimals: a gate at 0.999 must not read 99.9 vs "99.9"
    if last.startswith("cosine") or metric == "cosine":
        return f"{v:.5f}"
    return f"{v:.4g}"


def _delta_pt(v: Any, ref: Any) -> str:
    """The change against the fp32 reference in points: the issue bars are a top-1 *drop*, which a
    reader had to work out from the summary line."""
    return f" ({100 * (v - ref):+.1f})" if _num(v) and _num(ref) else ""


def _interval(d: dict[str, Any]) -> str:
    """The agreement's 95 % interval for the sample count: with 700 images, 98.1 % means
    96.8-98.9 %, so two files 0.3 pt apart are not ranked by it. Exactly 100 % has one too (450
    samples: 99.2-100): a bare "100.0" read as exact. An upper end of 100 % is written "100"
    (not "100.0") to keep the column short."""
    lo, hi, v = d.get("top1_agreement_low95"), d.get("top1_agreement_high95"), d.get("top1_agreement")
    if not (_num(lo) and _num(v)):
        return ""
    if not _num(hi):
        if v < 1:
            return ""
        hi = 1.0  # the upper end of 100 % agreement is 100 %, whether or not the JSON says so
    top = f"{100 * hi:.1f}".replace("100.0", "100")
    return f" ({100 * lo:.1f}-{top})"


def _fp32_of(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The fp32 row of the same format, target and model: validate marks `model_group` when its
    files are of several models (an fp32 file of another model gave a speed-up and size ratio)."""
    return next((r for r in rows if r["format"] == row["format"] and r["precision"] == "fp32"
                 and r.get("target") == row.get("target") and r["status"] == "ok"
                 and r.get("model_group") == row.get("model_group")), None)


def table_rows(report: Report) -> list[dict[str, str]]:
    """One display row per artifact: the columns shared by Markdown and HTML."""
    rows = []
    ref_file = report.data.get("reference_file") or None
    ref_named = sum(a["precision"] == "fp32" and _file_name(a) == ref_file for a in report.artifacts)
    # a file of another model than the reference (validate's model_group): its top-1 is not a
    # change against the reference's
    ref_group = next((a.get("model_group") for a in report.artifacts
                      if a["precision"] == "fp32" and _file_name(a) == ref_file), None)
    for a in report.artifacts:
        # an unreadable file (precision unknown) is no known model's: no ratio against an fp32 file
        ref = _fp32_of(report.artifacts, a) if a["precision"] != "unknown" else None
        lat = a.get("latency_ms", {})
        est = " (est.)" if a.get("latency_kind") == "estimated" else ""
        # issue #5 arm64 check: qemu-user latency is the emulator's, never a device figure.
        est = " (emulated, not a device figure)" if a.get("latency_kind") == "emulated" else est
        speed = ""
        # an int8 estimate on a core the cost model cannot speak for (estimate.int8_unchecked)
        unchecked = bool((a.get("runtime") or {}).get("settings", {}).get("int8_unchecked"))
        if ref is not None and ref is not a and lat.get("p50") and ref["latency_ms"].get("p50") and not unchecked:
            # a ratio of two estimates (or emulations) is one too (it read like a measurement)
            kinds = (a.get("latency_kind"), ref.get("latency_kind"))
            mark = " (est.)" if "estimated" in kinds else " (emulated)" if "emulated" in kinds else ""
            ratio = ref["latency_ms"]["p50"] / lat["p50"]
            notes = []
            # Rounds time both files one after the other: the spread of the per-round ratios is how
            # far one run's ratio moves on this machine (±0.2x on a shared VM).
            mine_r, ref_r = lat.get("p50_rounds"), ref["latency_ms"].get("p50_rounds")
            if isinstance(mine_r, list) and isinstance(ref_r, list) and len(mine_r) == len(ref_r) > 1 \
                    and all(_num(v) and v > 0 for v in mine_r + ref_r):
                per = [r / m for r, m in zip(ref_r, mine_r, strict=True)]
                if f"{min(per):.2f}" != f"{max(per):.2f}":
                    notes.append(f"rounds {min(per):.2f}-{max(per):.2f}x")
            # OpenVINO runs an int8 IR's float layers at its default precision (bf16 on a CPU with
            # AMX / avx512_bf16) while the fp32 reference is pinned to f32: part of the ratio is bf16
            mine = (a.get("runtime") or {}).get("settings", {}).get("inference_precision")
            theirs = (ref.get("runtime") or {}).get("settings", {}).get("inference_precision")
            if mine and theirs and mine != theirs:
                notes.append(f"float layers {mine}, fp32 at {theirs}")
            # The timed call takes inputs already in the file's layout and dtype; an int8 .tflite
            # also needs its input quantized, which the fp32 file does not: say what that costs.
            io, ref_io = lat.get("io_ms"), ref["latency_ms"].get("io_ms")
            if isinstance(io, float | int) and isinstance(ref_io, float | int):
                with_io = (ref["latency_ms"]["p50"] + ref_io) / (lat["p50"] + io)
                if abs(with_io - ratio) >= 0.05:
                    notes.append(f"{with_io:.2f}x with I/O conversion")
            speed = f"{ratio:.2f}x{mark}" + (f" ({'; '.join(notes)})" if notes else "")
        size_ratio = f" ({a['size_bytes'] / ref['size_bytes']:.2f}x)" if ref is not None and ref is not a else ""
        m, d = a.get("metrics", {}), a.get("drift", {})
        # validate's drift reference is one of its own fp32 files: its row compared the file with
        # itself ("100.0 (99.2-100)", cosine 1.00000) and read like a measurement. Known by its
        # name: two fp32 files of that name (two export folders) keep their figures.
        is_ref = a["precision"] == "fp32" and _file_name(a) == ref_file and ref_named == 1
        rows.append({
            "target": a.get("target", report.target), "format": a["format"], "precision": a["precision"],
            "size": f"{size_text(a['size_bytes'])}{size_ratio}",
            "p50 ms": f"{_ms(lat['p50'])}{est}" if lat.get("p50") is not None else "—",
            "p90 ms": f"{_ms(lat['p90'])}{est}" if lat.get("p90") is not None else "—",
            "speed-up": speed or ("1.00x" if a["precision"] == "fp32" and lat else "—"),
            "top-1 %": _pct(m.get("top1")) + (_delta_pt(m.get("top1"), (report.reference or {}).get("top1"))
                                               if a.get("model_group") == ref_group else ""),
            "top-5 %": _pct(m.get("top5")),
            # sentence encoders on an STS set (issue #6): their metric was dropped from the table
            **({"Spearman x100": f"{100 * m['spearman']:.2f}" if _num(m["spearman"]) else "—"}
               if "spearman" in m else {}),
            "agreement %": "the reference" if is_ref else _pct(d.get("top1_agreement")) + _interval(d),
            "cosine": "the reference" if is_ref else (
                f"{d['cosine']:.5f}" + (f" (min {d['cosine_min']:.3f})" if _num(d.get("cosine_min"))
                                        and d["cosine_min"] < 0.9995 else "")) if _num(d.get("cosine")) else "—",
            # the whole inference process (Python and the runtime included: ~30 MiB before any
            # model); MiB: targets/bench.py divides VmHWM's kB by 1024 (benchmark_model's KB too)
            "peak RSS MiB": f"{a['memory_mb']['peak_rss']:.0f}" if _num(a.get("memory_mb", {}).get("peak_rss"))
            else "—",
            # a row that ran but failed a --fail-on gate said "ok" while the gate table, a page
            # down, said FAILED: the row names its failed gates
            "status": a["status"] + (f": {a['error']}" if a.get("error") else "")
            + (f", gate FAILED: {', '.join(fg)}" if (fg := _failed_gates_of(report, a)) else ""),
        })
    if all(r["target"] == report.target for r in rows):  # said once in the summary, not per row
        for r in rows:
            del r["target"]
    # Two files of one format and precision (validate ours.onnx theirs.onnx) read as identical
    # rows: name the file, first, whenever a row's format and precision are not unique.
    keys = [(a.get("target"), a["format"], a["precision"]) for a in report.artifacts]
    if len(set(keys)) < len(keys):
        labels = file_labels([a.get("path") for a in report.artifacts])
        rows = [{"file": f, **r} for f, r in zip(labels, rows, strict=True)]
    return rows


def _file_name(a: dict[str, Any]) -> str:
    return Path(str(a.get("path", ""))).name or "—"


def file_labels(paths: list[Any]) -> list[str]:
    """Each file's name, with as many parent folders as tell it from the others of that name
    (exp1/m-fp32.onnx, comp1/m-fp32.onnx): two models' files of one name read as one."""
    parts = [Path(str(p or "")).parts or ("—",) for p in paths]
    out = []
    for mine in parts:
        n = 1
        while n < len(mine) and sum(q[-n:] == mine[-n:] for q in parts) > 1:
            n += 1
        out.append(str(Path(*mine[-n:])))
    return out


def _steps_rows(report: Report) -> list[dict[str, str]]:
    rows = []
    for s in report.steps:
        r = s.get("ratios", {})
        # size and γ are the weights as the step stores them (state_dict bytes; a QAT step counts
        # int8 weights at 1 B), not an exported file: the labels say so (γ read as file memory)
        rows.append({"step": s.get("name", ""), "params": f"{s.get('params', 0):,}",
                     "MACs": f"{s.get('macs', 0):,}", "weights size": size_text(s.get("size_bytes", 0)),
                     f"{s.get('metric_name') or 'metric'} %": _pct(s.get("metric")),
                     # top-1 agreement with the ORIGINAL model (the artifacts' drift is vs the last step)
                     # the original's agreement with itself (100.0) read like a measurement
                     "agreement vs original %": "the reference" if s.get("name") == "original" else
                     _pct((s.get("metrics") or {}).get("top1_agreement")),
                     "α params": f"{r.get('alpha', 1):.3f}", "β FLOPs (MACs)": f"{r.get('beta', 1):.3f}",
                     "γ weights as stored": f"{r.get('gamma', 1):.3f}",
                     "ΔA pt": f"{s['delta_metric'] * 100:+.2f}" if s.get("delta_metric") is not None else "—"})
    return rows


_STEPS_NOTE = ("Weights size and γ are the weights as each step stores them (int8 at 1 byte after QAT), "
               "not an exported file's size: see the Artifacts table for the files.")


def _step_notes(report: Report) -> list[tuple[str, str]]:
    """Each step's `note` (the QAT step's "size counts weights at 1 byte": without it γ 0.076 read
    as 13x smaller files, the shipped int8 files were 2.6x smaller), once per text (the chain
    total repeats the last step's), then what a pass could not do as asked (a prune ratio capped
    at max_layer_ratio, layers left whole): in the step's log, said here, not only on the terminal."""
    notes: dict[str, list[str]] = {}
    for s in report.steps:
        if s.get("note"):
            notes.setdefault(str(s["note"]), []).append(str(s.get("name", "")))
    out = [(", ".join(names), note) for note, names in notes.items()]
    log_of = [(s, s.get("log")) for s in report.steps]
    return out + [(str(s.get("name", "")), str(w)) for s, log in log_of if isinstance(log, dict)
                  for w in (log.get("warnings") or [])]


def _tensor(t: dict[str, Any]) -> str:
    shape = "x".join(str(d) for d in t.get("shape", []))
    text = f"{t.get('name', '?')} {t.get('dtype', '')}[{shape}]"
    if t.get("layout"):
        text += f" {t['layout']}"
    if t.get("scale"):
        text += f" (scale {t['scale']:.6g}, zero point {t.get('zero_point')})"
    return text


def io_rows(report: Report) -> list[dict[str, str]]:
    """How to call each artifact: its runtime and settings, and the tensors it takes and gives
    (layout, dtype, and the scale / zero point to (de)quantize int8 I/O: real = scale * (q - zp))."""
    rows = []
    for a in report.artifacts:
        rt = a.get("runtime", {})
        st = rt.get("settings", {})
        settings = ", ".join(f"{k} {v}" for k, v in st.items() if k in (
            "inference_precision", "intra_op_threads", "threads", "num_threads", "delegate"))
        io = a.get("io", {})
        rows.append({"format": a["format"], "precision": a["precision"],
                     "runtime": f"{rt.get('name', '—')} {rt.get('version', '')}".strip(),
                     "settings": settings or "—",
                     "inputs": "; ".join(_tensor(t) for t in io.get("inputs", [])) or "—",
                     "outputs": "; ".join(_tensor(t) for t in io.get("outputs", [])) or "—"})
    return rows


def _counts(names: list[str]) -> str:
    c: dict[str, int] = {}
    for n in names:
        k = n.split("#")[0]
        c[k] = c.get(k, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in c.items())


_QUANT_NOTE = ("TFLite: op kinds with an int8 / with a float tensor, read from the file (dynamic-range "
               "ops have int8 weights and float activations, so they count in both). ONNX / OpenVINO: the "
               "layers left float, each with the reason.")
_WHY = {"float_first": "first layers left float ({})",
        "sensitivity": "int8 moved the output most (sensitivity probe)"}


def _float_node(f: dict) -> str:
    # the option named as the run set it (--float-first, options.float_first, float_first): to_markdown / to_html
    why = _WHY["sensitivity"] if "sensitivity" in f else _WHY.get(f.get("why", ""), f.get("why", ""))
    why = why.format(option("--float-first", "float_first")) if f.get("why") == "float_first" else why
    return f["node"] + (f" ({f['layer']})" if f.get("layer") else "") + (f": {why}" if why else "")


# NNCF's overflow fix (exporters/openvino.py overflow_fix): who can run the file as measured
_OVERFLOW_NOTE = {"disable": "; first layer 8-bit weights (for x86 CPUs with VNNI)",
                  "first_layer_only": "; first layer 7-bit weights (runs on x86 CPUs without VNNI)",
                  "enable": "; 7-bit weights (runs on x86 CPUs without VNNI)"}


def quant_rows(report: Report) -> list[dict[str, str]]:
    """[issue #6] Which ops of each quantized artifact are int8 and which stayed float: TFLite op
    kinds from the file (mixed models included), ONNX int8-dynamic MatMuls kept fp32."""
    rows = []
    for a in report.artifacts:
        d = a.get("details") or {}
        if a.get("precision") in ("fp32", "fp16", "unknown"):  # unknown: an unreadable file, no ops to list
            continue
        if "int8_ops" in d:
            int8 = ", ".join(f"{k} x{v}" for k, v in d["int8_ops"].items())
            flt = _counts([o for o in d.get("float_ops", []) if "#" in o])
        elif (q := d.get("quantization")) and isinstance(q, dict) and ("float_nodes" in q or q.get("format")):
            # an int8 file with no float layer has a row too (it was left out, reading as unknown)
            int8 = str(q.get("format", "")) + _OVERFLOW_NOTE.get(str(q.get("overflow_fix")), "")
            if isinstance(bc := q.get("bias_correction"), dict) and bc.get("layers"):
                int8 += f"; biases corrected in {bc['layers']} layers"  # (exporters/_bias_correction.py)
            flt = ", ".join([_float_node(f) for f in q.get("float_nodes", [])] + [
                f"{k} x{v} (int8-dynamic quantizes MatMul / Gemm / Gather only)"
                for k, v in (q.get("float_ops_not_covered") or {}).items()]) or "none"
        elif (q := d.get("quantization")) and isinstance(q, dict) and q.get("source") == "qat":
            # QAT's OpenVINO IR (its QDQ ONNX converted) records no op list: said, not left out
            int8 = f"QAT, {q.get('via', 'converted')}"
            flt = "not recorded"
        elif not d.get("quantization"):
            # a file validated without its export's report: the layer list lives there (the
            # section vanished without a word)
            int8, flt = "not recorded", "not recorded (validated without its export's report)"
        else:
            continue
        rows.append({"format": str(a.get("format")), "precision": str(a.get("precision")),
                     "int8": int8 or "none", "float": flt or "none"})
    return rows


def _columns(rows: list[dict[str, str]]) -> list[str]:
    """Every row's keys, in first-seen order (an STS row adds a Spearman column the others lack)."""
    return list(dict.fromkeys(c for r in rows for c in r))


def _md_safe(text: str) -> str:
    """Markdown text with what a viewer would take for an HTML tag (`<script>` in a folder name,
    rendered in a PR comment or a CI summary) escaped; `<0.97` in a gate stays as it reads."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _code(text: str) -> str:
    """`text` as one Markdown code span, whatever backticks it holds (one broke the span)."""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if len(fence) > 1 else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _uncode(text: str) -> str:
    """The text inside a `_code` span (for HTML), else the text."""
    m = re.fullmatch(r"(`+) ?(.*?) ?\1", text, re.S)
    return m.group(2) if m else text


def _md_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_none_\n"
    cols = _columns(rows)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    # `\|` keeps a path with a bar whole (it was turned into "/", naming a file that does not exist)
    def cell(text: str) -> str:
        return _md_safe(text).replace("|", "\\|").replace("`", "\\`").replace("\n", " ")

    out += ["| " + " | ".join(cell(r.get(c, "—")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _summary(report: Report) -> list[tuple[str, str]]:
    m, ref, data = report.model, report.reference, report.data
    # `validate` of loose files knows no source model: say nothing rather than "None" and "0 / 0"
    items = [("model", f"{m.get('name')}" + (f" ({m['source']})" if m.get("source") else ""))]
    if m.get("params"):
        items.append(("params / MACs", f"{m.get('params', 0):,} / {m.get('macs', 0):,}"))
    if m.get("input_shape"):
        ids = f" {m['input_dtype']} ids" if m.get("input_dtype") else ""  # [audit #27] float32 goes unsaid
        if ids and m.get("input_dtype_detected"):
            ids += f" (detected: {m['input_dtype_detected']})"
        items.append(("input", str(m.get("input_shape")) + ids))
    items.append(("target", report.target))
    if data.get("skipped"):
        items.append(("skipped (formats the target does not run)", ", ".join(data["skipped"])))
    if data.get("other_model"):  # validate of files of several models: not compared with each other
        items.append(("not of one model", "; ".join(data["other_model"])))
    if data.get("calib"):
        items.append(("calibration data", f"{data.get('calib', '—')} ({data.get('calib_n', 0)} samples)"))
    if data.get("eval"):  # without --eval it read "None (0 samples, unlabelled)"
        items.append(("evaluation data", f"{data.get('eval', '—')} ({data.get('eval_n', 0)} samples, "
                                         f"{'labelled' if data.get('labelled') else 'unlabelled'}"
                                         + (f", preprocessed with {data['eval_preprocess']}"
                                            if data.get("eval_preprocess") else "") + ")"))
    if ref:
        label = "fp32 PyTorch reference"
        if data.get("reference"):  # `validate`: an fp32 artifact's outputs, not a PyTorch model's
            label = f"reference: {data['reference']}"
        if report.steps:  # a compression run: drift is measured against the compressed float model
            orig = report.steps[0].get("metric")
            label = (f"reference: {_reference_model(report.steps)} (artifact drift is against it"
                     + (f"; the original scored {100 * orig:.1f} %, see Compression steps)" if orig is not None
                        else ")"))
        items.append((label, ", ".join(f"{k} {100 * v:.1f} %" for k, v in ref.items() if isinstance(v, float))))
    devices = {json.dumps(a["runtime"]["device"], sort_keys=True) for a in report.artifacts
               if isinstance(a.get("runtime"), dict) and a["runtime"].get("device")}
    for dev in sorted(devices):  # measured there; "machine" below is the host that ran edgecompress
        items.append(("device measured on", ", ".join(f"{k} {v}" for k, v in json.loads(dev).items())))
    mach = report.machine
    host = "machine" if not devices else "host machine"
    items.append((host, f"{mach.get('cpu')} · {mach.get('cores')} cores · {mach.get('memory_gb')} GiB · "
                             f"{' '.join(mach.get('isa_extensions', []))} · load average (1/5/15 min) "
                             f"{mach.get('loadavg')}"))
    items.append(("versions", ", ".join(f"{k} {v}" for k, v in report.versions.items())))
    items.append(("created", report.created))
    items.append(("command", _code(report.command) if report.command else "—"))
    if report.cwd:
        items.append(("run in", _code(report.cwd)))
    return items


def _reference_model(steps: list[dict[str, Any]]) -> str:
    """Which float model a compression run's artifacts are compared with. After QAT it is the
    float model before QAT (pipeline.py: spec.extra["fp32_reference"]), not "after the passes":
    QAT is a pass, and it must be the last one (recipe.py), so the passes before it are the steps
    between `original` and `qat`."""
    names = [str(s.get("name", "")) for s in steps]
    if "qat" not in names:
        return "the float PyTorch model after the passes"
    before = [n for n in names[:names.index("qat")] if n != "original"]
    return (f"the float PyTorch model before QAT, after {', '.join(before)}" if before
            else "the original float PyTorch model (before QAT, the only pass)")


def _is_validate(report: Report) -> bool:
    """A `validate` report: its command, or its data (every export records data.calib, None
    without int8; validate never does). A hand-built report with neither reads as an export."""
    return report.command.startswith("edgecompress validate") or (bool(report.data) and "calib" not in report.data)


# (issue #5) Say in words, not only "(est.)", when latency comes from the cost model, and quote
# the model's calibration error so nobody reads an estimate as a device measurement.
def _estimate_note(report: Report) -> str:
    est = [a for a in report.artifacts if a.get("latency_kind") == "estimated"]
    if not est:
        return ""
    st = est[0].get("runtime", {}).get("settings", {})
    err = st.get("calibration_error", {})
    dev = f" for {st['device']}" if st.get("device") else ""
    tail = (f" Calibration error on held-out public figures: mean {err['mean_abs_error_pct']} %, "
            f"max {err['max_abs_error_pct']} %." if err.get("mean_abs_error_pct") is not None else "")
    # this target's own held-out errors, signed (reports since 2026-12-01), per precision (since
    # 2026-12-02: the one fp32 Pi 4 figure was quoted under its int8 rows too)
    said: list[str] = []
    for a in est:
        e = a.get("runtime", {}).get("settings", {}).get("calibration_error", {})
        if "target_error_pct" in e:
            text = _estimate_error_text(str(e.get("target") or report.target), e["target_error_pct"],
                                        e.get("precision"))
            said += [text] if text not in said else []
    unchecked = {why for a in est if (why := a.get("runtime", {}).get("settings", {}).get("int8_unchecked"))}
    said += [why[0].upper() + why[1:] + "." for why in sorted(unchecked)]
    tail += "".join(" " + t for t in said)
    return (f"Latency of {len(est)} artifact(s) is ESTIMATED{dev} by a roofline cost model (the device "
            f"was not attached; nothing ran, so no accuracy, drift or memory).{tail}")


def _estimate_error_text(target: str, errors: list[float], precision: str | None = None) -> str:
    """Which way the estimate errs on this target (at this precision, when known): "mean 18.9 %,
    max 58.8 %" said neither that the 58.8 % is the Raspberry Pi 4 (estimate 2.4x optimistic) nor
    that the Pixel 4 errs on the safe side."""
    where, at = (f"{target} {precision}", f" at {precision}") if precision else (target, "")
    if not errors:
        return (f"No published {where} figure checks it: the error on this target{at} is unknown "
                "(the model is fitted on a Pixel 4's Cortex-A76).")
    lo, hi = min(errors), max(errors)
    span = f"{lo:+.1f} %" if lo == hi else f"{lo:+.1f} to {hi:+.1f} %"
    n = len(errors)
    if lo >= 0:
        how = "slower than published, so on the safe side"
    elif hi <= 0:
        how = (f"faster than published: optimistic, the device took {'' if lo == hi else 'up to '}"
               f"{100 / (100 + lo):.1f}x the estimate")
    else:
        how = "on both sides of the published times"
    return f"On {target}{at}: {span} on its {n} held-out figure{'s' if n != 1 else ''} ({how})."


# (issue #5 arm64 check) Latency measured under qemu-user: say so in words too.
def _emulated_note(report: Report) -> str:
    n = sum(a.get("latency_kind") == "emulated" for a in report.artifacts)
    return (f"Latency of {n} artifact(s) is EMULATED (qemu-user on this host, arm64 runtime "
            "kernels): it shows the artifact runs on arm64, NOT how fast any device is. "
            "Accuracy and drift are real.") if n else ""


_NO_PLOT = ("No accuracy-vs-latency plot: no artifact has both a latency and an accuracy or drift figure "
            "(give evaluation data ({}) and an fp32 artifact for drift).")


def _no_plot(report: Report) -> str:
    """Why there is no plot; on an estimated target, not advice to pass the --eval it ignored."""
    ignored = (report.data or {}).get("eval_ignored")
    if ignored or any(a.get("latency_kind") == "estimated" for a in report.artifacts):
        given = f" ({ignored} was given and not used)" if ignored else ""
        return ("No accuracy-vs-latency plot: an estimated target runs nothing, so it has no accuracy or "
                f"drift figure{given}.")
    return _NO_PLOT.format(option("--eval", "eval"))


_GATE_PATH = re.compile(r"^\s*([^<>=!\s]+)\s*(?:<=|>=|==|!=|<|>)")


def _gate_artifacts(report: Report, g: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a gate judged: same target/format/precision (and file name, when several share those)."""
    rows = [a for a in report.artifacts
            if "/".join((str(a.get("target", "")), str(a.get("format")), str(a.get("precision"))))
            == g.get("artifact")]
    if len(rows) > 1 and g.get("file"):
        rows = [a for a in rows if _file_name(a) == Path(str(g["file"])).name] or rows
    return rows


def _failed_gates_of(report: Report, a: dict[str, Any]) -> list[str]:
    return [str(g["gate"]) for g in report.gates
            if not g.get("passed", True) and any(r is a for r in _gate_artifacts(report, g))]


def _gate_value(report: Report, g: dict[str, Any]) -> str:
    """The gate's value in its metric's unit (size_bytes printed 2.121e+05), and a latency gate
    on an estimated or emulated row marked as the table marks it (a FAILED 0.201 read as measured)."""
    m = _GATE_PATH.match(str(g.get("gate", "")))
    path = m.group(1) if m else ""
    if g.get("value") is None:  # a gate no artifact could answer (recorded as failed)
        return "— (no artifact has it)"
    text = metric_value(path, g.get("value"))
    if path.startswith(("latency_ms.", "latency_by_batch.")):
        kinds = {a.get("latency_kind") for a in _gate_artifacts(report, g)}
        text += " (est.)" if "estimated" in kinds else " (emulated)" if "emulated" in kinds else ""
    return text


def _gate_rows(report: Report) -> list[dict[str, str]]:
    # the file too (validate records it): two files of one format and precision read the same
    files = any(g.get("file") for g in report.gates)
    return [{"gate": g["gate"], "artifact": g["artifact"], **({"file": g.get("file", "")} if files else {}),
             "value": _gate_value(report, g), "status": "ok (passed)" if g["passed"] else "FAILED"}
            for g in report.gates]


def _regression_lines(report: Report) -> list[str]:
    return [str(r) for r in report.baseline.get("regressions") or []]


def _verdict(report: Report) -> tuple[bool, str] | None:
    """(passed, one line) when the report judged something: --fail-on gates, a --baseline, or an
    artifact that failed. The statuses, the gate table and the baseline section were pages apart
    ("ok" next to a FAILED gate) and the exit code was nowhere. Regressions fail the run only
    under --fail-on-regression: Report.verdict() judges that, as the exit code does."""
    b = report.baseline
    has_baseline = b.get("regressions") is not None
    v = report.verdict()
    if not (report.gates or has_baseline or v["failed_artifacts"]):
        return None
    strict = v["regressions_fail"]
    regression = say("--fail-on-regression", "fail_on_regression=True")  # validate's (no recipe key)
    judged = []
    if v["failed_artifacts"]:
        judged.append(f"{v['failed_artifacts']} artifact{'s' if v['failed_artifacts'] != 1 else ''} failed")
    if report.gates:
        n = len(report.gates)
        judged.append(f"{v['failed_gates']} of {n} gate checks failed" if v["failed_gates"]
                      else f"{n} gate check{'s' if n != 1 else ''} passed")
    base = []
    if has_baseline:
        n = v["regressions"]
        if n:
            base.append(f"{n} regression{'s' if n != 1 else ''} against the baseline"
                        + (f" ({regression}: they fail the run)" if strict
                           else f" (they fail the run only with {regression})"))
        elif not v.get("baseline_compared", True):
            base.append("nothing compared against the baseline (it shares no artifact and metric with this run)"
                        + (f": {regression} fails the run" if strict else ""))
        else:
            base.append("no regression against the baseline")
        if v["baseline_missing"]:
            base.append(f"{v['baseline_missing']} baseline artifact{'s' if v['baseline_missing'] != 1 else ''} "
                        "absent from this run")
    passed = bool(v["passed"])
    text = "; ".join(x for x in (", ".join(judged), ", ".join(base)) if x)
    return passed, f"Verdict: {'passed' if passed else 'FAILED'} — {text}"


def _baseline_extra(report: Report) -> list[str]:
    """Sentences under the baseline scope: rows the baseline has and this run lacks (a format no
    longer exported read as "no regression"), and compare_baseline's notes (another model)."""
    b = report.baseline
    out = []
    if b.get("missing"):
        out.append(f"In the baseline, absent from this run: {', '.join(map(str, b['missing']))}.")
    out += [f"Note: {n}." for n in b.get("notes") or []]
    return out


def _baseline_scope(report: Report) -> str:
    """What the baseline comparison looked at, and what it could not (e.g. accuracy without --eval)."""
    b = report.baseline
    parts = [f"Threshold {100 * b.get('threshold', 0):g} %."]  # 0.004 read "0 %"
    if _num(b.get("accuracy_threshold")):  # reports before it judged every metric relatively
        parts = [f"Threshold {100 * b.get('threshold', 0):g} % (latency, size, memory); "
                 f"{100 * b['accuracy_threshold']:g} pt (accuracy, agreement, cosine)."]
    if b.get("compared") is not None:
        parts.append(f"Compared: {', '.join(b['compared']) or 'nothing'}.")
    if b.get("not_compared"):
        parts.append(f"Not compared (absent from this run or the baseline): {', '.join(b['not_compared'])}.")
    if b.get("unmatched"):
        parts.append(f"No baseline row for: {', '.join(b['unmatched'])}.")
    return " ".join(parts)


def _latency_note(report: Report) -> str:
    measured = [a for a in report.artifacts if a.get("latency_kind") == "measured" and a["status"] == "ok"]
    st = measured[0].get("settings", {}) if measured else {}
    how = ""
    if st.get("runs"):
        rounds = st.get("rounds", 1)
        how = (f" (p50 / p90 of {st['runs']} timed runs after {st.get('warmup', 0)} warm-up"
               + (f"; the median of {rounds} rounds that alternate between the artifacts)" if rounds > 1 else ")"))
    other = " (other batch sizes: Latency by batch size, below)" if batch_rows(report) else ""
    return (f"Latency is batch 1{other}, in ms{how}, of the runtime call on inputs already in the file's layout "
            "and dtype; \"with I/O conversion\" adds turning float NCHW inputs into them (an int8 "
            "file's quantization) and int8 outputs back. Speed-up and size ratio are against the fp32 "
            "artifact of the same format; agreement and cosine (mean over samples) are against the "
            "reference outputs on the same inputs, with the agreement's 95 % interval for the "
            "number of samples in brackets (Wilson); top-1 in brackets is the change in points "
            "against the reference's top-1. Peak RSS is the whole inference process, Python "
            "and the runtime included, in MiB (2^20 B); sizes are in kB / MB (10^3 / 10^6 B). "
            "`(est.)` marks estimated latency (no device measured)."
            + _fixed_batch_note(report) + _mean_note(report) + _no_reference_note(report)
            + _first_output_note(report) + _batch_error_note(report) + _busy_note(report)
            + _original_note(report))


def _original_note(report: Report) -> str:
    """A compression run's files against the ORIGINAL model: the table's "(+0.2)" is against the
    reference (the float model after the passes, or before QAT) while the steps' ΔA (-0.44) is
    against the original, and nothing joined the two. Only for top-1, which both record."""
    first = report.steps[0] if report.steps else {}
    orig = first.get("metric") if first.get("name") == "original" and first.get("metric_name") == "top1" else None
    if not _num(orig) or len(report.steps) < 2:
        return ""
    parts = [f"{a['format']} {a['precision']} {100 * (a['metrics']['top1'] - orig):+.1f} pt"
             for a in report.artifacts if _num((a.get("metrics") or {}).get("top1"))]
    if not parts:
        return ""
    return (f" Against the original model (top-1 {100 * orig:.1f} %, PyTorch, before the compression steps) "
            f"the files' top-1 is: {', '.join(parts)}.")


def _batch_error_note(report: Report) -> str:
    """A batch size an artifact could not run (a .tflite whose graph fixes batch 1 asked for
    --batch 4): the row stays ok at batch 1, and the failure was only in report.json."""
    errs = [f"{a['format']} {a['precision']} at batch {b}: {str(v['error'])[:160]}"
            for a in report.artifacts for b, v in sorted((a.get("latency_by_batch") or {}).items())
            if isinstance(v, dict) and v.get("error")]
    return f" Not timed: {'; '.join(errs)}." if errs else ""


def _first_output_note(report: Report) -> str:
    """The runners and the reference compare one output; a model with several must say which, or a
    wrong second output would pass unseen."""
    many = [a for a in report.artifacts if len((a.get("io") or {}).get("outputs") or []) > 1]
    if not many:
        return ""
    first = (many[0]["io"]["outputs"][0] or {}).get("name") or "the first"
    return (f" The model has {len(many[0]['io']['outputs'])} outputs: accuracy, agreement and cosine are of "
            f"the first ({first}) only.")


def _busy_note(report: Report) -> str:
    """Say when the host was busy: its latencies read high and vary (a 1-min load of 4.9 on 2
    cores was shown only as a bare list in the summary). Measured on this host only: a device
    reached by ssh / adb is not the machine whose load is recorded."""
    mach = report.machine or {}
    load, cores = mach.get("loadavg"), mach.get("cores")
    remote = any(isinstance(a.get("runtime"), dict) and a["runtime"].get("device") for a in report.artifacts)
    measured = any(a.get("latency_kind", "measured") == "measured" and a.get("status") == "ok"
                   for a in report.artifacts)
    if remote or not measured or not (isinstance(load, list) and load and _num(load[0]) and _num(cores)):
        return ""
    if load[0] <= cores:
        return ""
    return (f" The host was busy: 1-min load average {load[0]:.1f} on {cores} cores when the report was "
            "written, so latencies read high and vary between rounds (the speed-ups less so); rerun on a "
            "quiet host before quoting milliseconds.")


def _no_reference_note(report: Report) -> str:
    """Why a quantized row has no speed-up or size ratio: its format has no fp32 artifact (a recipe's
    `export: [onnx:int8]` exports none; `export --int8` adds it)."""
    # validate's model_group: an fp32 file of ANOTHER model is no reference for this int8 one
    have = {(a["format"], a.get("target"), a.get("model_group")) for a in report.artifacts
            if a["precision"] == "fp32"}
    lone = sorted({a["format"] for a in report.artifacts if a["precision"] != "fp32" and a["status"] == "ok"
                   and (a["format"], a.get("target"), a.get("model_group")) not in have})
    if not lone:
        return ""
    if _is_validate(report):  # validate has no -f: the fp32 file is simply not among its inputs
        return (f" No speed-up or size ratio for {', '.join(lone)}: no fp32 artifact of that format and "
                "model was validated (pass the same model's fp32 file of that format to validate too).")
    add = ", ".join(f"{f}:fp32" for f in lone)
    flags = " ".join(f"-f {f}:fp32" for f in lone)
    how = say(f"`{flags}`", f"{add} to formats", f"{add} to the recipe's `export`")
    return (f" No speed-up or size ratio for {', '.join(lone)}: no fp32 artifact of that format was "
            f"exported (add {how}).")


def _mean_note(report: Report) -> str:
    rows = [a for a in report.artifacts if (a.get("latency_ms") or {}).get("p50_is_mean")]
    if not rows:
        return ""
    names = ", ".join(f"{a['format']} {a['precision']}" for a in rows)
    return (f" {names}: the device's benchmark_model "
            "prints no percentiles, so p50 there is its mean and p90 is not known.")


def _fixed_batch_note(report: Report) -> str:
    fixed = [a for a in report.artifacts if a.get("settings", {}).get("batches_skipped")]
    if not fixed:
        return ""
    skipped = sorted({b for a in fixed for b in a["settings"]["batches_skipped"]})
    names = ", ".join(f"{a['format']} {a['precision']}" for a in fixed)
    return (f" {names}: the file fixes batch {fixed[0]['settings'].get('fixed_batch')} (a model exported "
            f"at that batch), so it was timed and evaluated at that batch only, not at "
            f"{', '.join(map(str, skipped))}.")


@dataclass(frozen=True)
class _Section:
    """A table section both renderers draw the same way: notes above the table, lines below it
    (`(key, text)`; a key is shown bold)."""

    title: str
    rows: list[dict[str, str]]
    notes: tuple[str, ...] = ()
    after: tuple[tuple[str, str], ...] = ()


_IO_NOTE = "int8 tensors: real value = scale × (q − zero point)."
def _gates_title() -> str:
    """The gates' heading, naming the option as the run set it (--fail-on, options.fail_on, fail_on)."""
    return f"Gates ({option('--fail-on', 'fail_on')})"


def batch_rows(report: Report) -> list[dict[str, str]]:
    """Latency and throughput per batch size, when some artifact was timed at more than one: the
    Artifacts table is batch 1, and `--batch 8`'s figures were only in report.json. A batch that
    could not be timed is left out here (the latency note says why)."""
    timed = [(a, sorted(((int(b), v) for b, v in (a.get("latency_by_batch") or {}).items()
                         if str(b).isdigit() and isinstance(v, dict) and _num(v.get("p50"))),
                        key=lambda bv: bv[0]))
             for a in report.artifacts if a.get("status") == "ok"]
    if not any(len(batches) > 1 for _, batches in timed):
        return []
    keys = [(a.get("target"), a["format"], a["precision"]) for a, _ in timed]
    many_targets = len({k[0] for k in keys}) > 1
    rows = []
    labels = file_labels([a.get("path") for a, _ in timed])
    for (a, batches), label in zip(timed, labels, strict=True):
        est = " (est.)" if a.get("latency_kind") == "estimated" else \
            " (emulated)" if a.get("latency_kind") == "emulated" else ""
        for b, v in batches:
            tput = v.get("throughput_per_s")
            rows.append({
                **({"file": label} if len(set(keys)) < len(keys) else {}),
                **({"target": str(a.get("target", report.target))} if many_targets else {}),
                "format": a["format"], "precision": a["precision"], "batch": str(b),
                "p50 ms": f"{_ms(v['p50'])}{est}",
                "p90 ms": f"{_ms(v['p90'])}{est}" if _num(v.get("p90")) else "—",
                "throughput samples/s": (f"{tput:.0f}" if tput >= 100 else _sig3(tput)) if _num(tput) else "—"})
    return rows


_BATCH_NOTE = ("p50 / p90 are per call (one batch of that many samples); throughput is samples per second "
               "at the p50 (batch / p50).")


def _sections(report: Report) -> list[_Section]:
    """The table sections after the Artifacts table, in order (present only when they have rows)."""
    out = []
    if batches := batch_rows(report):  # next to the batch-1 table it extends
        out.append(_Section("Latency by batch size", batches, (_BATCH_NOTE,)))
    out.append(_Section("Runtimes and I/O contract", io_rows(report), (_IO_NOTE,)))
    if quant := quant_rows(report):
        out.append(_Section("Quantized and float ops", quant, (_QUANT_NOTE,)))
    if report.steps:
        out.append(_Section("Compression steps", _steps_rows(report),
                            after=(("", _STEPS_NOTE), *_step_notes(report))))
    return out


def to_markdown(report: Report, plot_name: str | None = "report.png") -> str:
    """report.md; its hints name options as the run that produced it spelled them (`Report.spoken_as`:
    --eval from the CLI, data.eval from a recipe, eval from Python)."""
    with on_surface(report.spoken_as()):
        return _to_markdown(report, plot_name)


def _to_markdown(report: Report, plot_name: str | None) -> str:
    parts = [f"# edgecompress validation report: {report.model.get('name')}\n"]
    if (verdict := _verdict(report)) is not None:  # first: what a CI reader looks for
        head, _, rest = verdict[1].partition(" — ")
        parts.append(f"**{head}** — {rest}\n")
    parts += [f"- **{k}**: {v if v.startswith('`') else _md_safe(v)}" for k, v in _summary(report)]
    parts.append(f"\n{_md_safe(_latency_note(report))}\n")
    if _estimate_note(report):  # issue #5: estimated latency, in words
        parts.append(f"**{_estimate_note(report)}**\n")
    if _emulated_note(report):  # issue #5: emulated latency, in words
        parts.append(f"**{_emulated_note(report)}**\n")
    parts.append("## Artifacts\n")
    parts.append(_md_table(table_rows(report)))
    for sec in _sections(report):
        parts.append(f"\n## {sec.title}\n")
        parts += [f"{_md_safe(n)}\n" for n in sec.notes]
        parts.append(_md_table(sec.rows))
        parts += [f"\n{'- **' + k + '**: ' if k else ''}{_md_safe(v)}" for k, v in sec.after]
    if report.baseline.get("regressions") is not None:
        parts.append("\n## Against the baseline\n")
        regs = _regression_lines(report)
        parts.append(f"Baseline: {_code(str(report.baseline.get('path')))}. {_md_safe(_baseline_scope(report))} "
                     + "".join(f"{_md_safe(x)} " for x in _baseline_extra(report))
                     + ("No regression over the threshold.\n" if not regs else "Regressions:\n"))
        parts += [f"- {_md_safe(r)}" for r in regs]
    if report.gates:
        parts.append(f"\n## {_gates_title()}\n")
        parts.append(_md_table(_gate_rows(report)))
    if plot_name:
        parts.append(f"\n![accuracy vs latency vs size]({plot_name})\n")
    else:
        parts.append(f"\n_{_md_safe(_no_plot(report))}_\n")
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;
color:#1b1f24;padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.88rem}th,td{padding:.35rem .55rem;
border-bottom:1px solid #d8dee4;text-align:right;white-space:nowrap}th{background:#f3f5f7;position:sticky;top:0}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}tr.failed td{background:#fff0f0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600;white-space:normal;text-align:left}
dl{display:grid;grid-template-columns:minmax(10rem,22rem) 1fr;gap:.25rem 1rem;font-size:.9rem}dt{font-weight:600}
.scroll{overflow-x:auto}td.text,th.text{white-space:normal;text-align:left;min-width:12rem}
td.wrap{white-space:normal;min-width:6rem}
dd{margin:0;word-break:break-word}.note{color:#57606a;font-size:.85rem}img{max-width:100%;border:1px solid #d8dee4}
"""


def _html_table(rows: list[dict[str, str]], status_col: bool = True) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = _columns(rows)
    head = "".join(f"<th{' class=text' if c in _TEXT_COLS else ''}>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        # red for a failure only: a not-validated row (--no-validate) is no failure (the verdict passes)
        status = r.get("status", "ok").lower()
        failed = status_col and (status.startswith("failed") or "gate failed" in status)
        cells = []
        for c in cols:
            cls = ""
            if c == "status":
                cls = ' class="bad"' if failed else ' class="ok"'
            elif c in _TEXT_COLS:
                cls = ' class="text"'
            elif c in _WRAP_COLS:
                cls = ' class="wrap"'
            cells.append(f"<td{cls}>{html.escape(r.get(c, '—'))}</td>")
        row_cls = ' class="failed"' if failed else ""
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    # scrolls on its own: wide tables pushed the status and the failure reason off the page
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


# long free text: wrapped and left-aligned (numbers stay right-aligned on one line)
_TEXT_COLS = {"inputs", "outputs", "settings", "int8", "float", "runtime"}
_WRAP_COLS = {"speed-up", "cosine"}  # short, but with a parenthesis that may wrap


def _html_verdict(report: Report) -> str:
    if (verdict := _verdict(report)) is None:
        return ""
    head, _, rest = verdict[1].partition(" — ")
    return f"<p class={'ok' if verdict[0] else 'bad'}><b>{html.escape(head)}</b> — {html.escape(rest)}</p>"


def to_html(report: Report, plot_png: bytes | None = None) -> str:
    """report.html, worded as to_markdown."""
    with on_surface(report.spoken_as()):
        return _to_html(report, plot_png)


def _to_html(report: Report, plot_png: bytes | None) -> str:
    summary = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(_uncode(v))}</dd>"
                      for k, v in _summary(report))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>edgecompress report: {html.escape(str(report.model.get('name')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgecompress validation report: {html.escape(str(report.model.get('name')))}</h1>",
        _html_verdict(report),
        f"<dl>{summary}</dl>",
        "<h2>Artifacts</h2>",
        f"<p class=note>{html.escape(_latency_note(report).replace('`', ''))}</p>",
        # issue #5: estimated latency, in words (empty when every latency was measured)
        f"<p class=bad>{html.escape(_estimate_note(report))}</p>" if _estimate_note(report) else "",
        f"<p class=bad>{html.escape(_emulated_note(report))}</p>" if _emulated_note(report) else "",
        _html_table(table_rows(report)),
    ]
    for sec in _sections(report):
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        parts += [f"<p class=note>{html.escape(n)}</p>" for n in sec.notes]
        parts.append(_html_table(sec.rows, status_col=False))
        parts += [f"<p class=note>{'<b>' + html.escape(k) + '</b>: ' if k else ''}{html.escape(v)}</p>"
                  for k, v in sec.after]
    if report.baseline.get("regressions") is not None:
        regs = _regression_lines(report)
        parts.append("<h2>Against the baseline</h2>")
        parts.append(f"<p class=note>Baseline: {html.escape(str(report.baseline.get('path')))}. "
                     f"{html.escape(_baseline_scope(report))}</p>")
        parts += [f"<p class=bad>{html.escape(x)}</p>" for x in _baseline_extra(report)]
        parts.append("<p>No regression over the threshold.</p>" if not regs else
                     "<ul>" + "".join(f"<li class=bad>{html.escape(r)}</li>" for r in regs) + "</ul>")
    if report.gates:
        parts += [f"<h2>{html.escape(_gates_title())}</h2>", _html_table(_gate_rows(report))]
    if plot_png:
        b64 = base64.b64encode(plot_png).decode()
        parts += ["<h2>Accuracy vs latency vs size</h2>",
                  f"<img alt='accuracy vs latency vs size' src='data:image/png;base64,{b64}'>"]
    else:
        parts.append(f"<p class=note>{html.escape(_no_plot(report))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
