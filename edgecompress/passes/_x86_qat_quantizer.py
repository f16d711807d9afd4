"""The x86 PT2E quantizer the QAT pass uses, annotated for ONNX Runtime's QDQ fusions.

[issue #4] `X86InductorQuantizer` annotates for Inductor's int8 kernels, and the QAT pass exports
its QDQ graph to ONNX where ONNX Runtime (and OpenVINO) run it. ORT turns `DQ -> Conv [-> Relu /
Clip] -> Q` into a QLinearConv only when the conv (or its fused activation) output goes *straight*
into a QuantizeLinear; a conv whose output reaches a Q only through another float op stays a float
(Fused)Conv between DequantizeLinear / QuantizeLinear. On EfficientNet-Lite0 13 of 49 convs stayed
float that way (ORT 8.2 ms vs 3.7 ms for ORT's own PTQ file), through two patterns:

1. `Conv -> Clip -> Pad -> Q`: SameConv2d's explicit `F.pad` before a stride-2 depthwise conv.
   The x86 quantizer puts no Q on a conv(+ReLU6) output (Inductor reads the next op's input Q), so
   the only Q was the depthwise conv's input, after the Pad. Here every conv (+ unary) output
   gets its own Q/DQ, and a zero `pad` feeding quantized convs moves the conv's input Q/DQ in
   front of it: `Q -> DQ -> Pad -> Conv`. ORT's PadFusion folds that Pad into the conv's pads and
   the QDQ fusion makes `DQ -> Conv(pads) -> Q` a QLinearConv, as in ORT's own PTQ files (whose
   Pad is fused before quantizing). Exact: a zero pad of a dequantized tensor is representable
   with the same scale / zero point. (A pass-through `DQ -> Pad -> Q` with shared qparams was
   tried first: ORT keeps that Pad in float between a DequantizeLinear and a QuantizeLinear, 3
   ops per pad, about as slow as the float conv it replaced.)
2. `Conv -> Add -> Q`: the x86 quantizer annotates conv + add (and conv + add + ReLU) as one
   pattern, because Inductor has a fused conv-add kernel; the conv output then has no Q/DQ. ORT has
   no QLinearConv + Add fusion in QDQ form (it has QLinearAdd for `DQ, DQ -> Add -> Q`). Here the
   binary (add) fusion patterns are skipped: the conv is annotated alone (output quantized), and
   an add of two quantized tensors gets quantized inputs and output.

3. `DQ -> Gemm` with a float bias: ORT's QDQ Gemm selector needs every input dequantized (bias as
   int32), else the classifier stays a float Gemm whose per-channel weight DequantizeLinear runs
   at every inference (0.7 ms of EfficientNet-Lite0's ~5). Here a linear's bias gets an int32
   spec derived from the input and weight scales (scale = s_x * s_w, zero point 0; ORT's PTQ
   quantizes biases the same way), and ORT makes it a QGemm.

4. `float_first`: the first N conv / linear nodes (graph order) are left unannotated, so they stay
   float, as the ONNX exporter's PTQ does for EfficientNet-Lite0 (`ExportOptions.float_first`:
   MLAS has no fast int8 path for a 3-channel stem conv or a narrow full-resolution depthwise
   conv; exporters/onnx.py). The QAT pass passes the model's own default.

5. `Linear -> Q/DQ -> Linear`: the lowrank pass factorizes a Linear into Linear(in, r, no bias)
   + Linear(r, out). With both quantized, OpenVINO's CPU plugin (2025) computes the second
   FullyConnected wrong when the model is reshaped to a static batch of 1 or 2 (outputs ~1e29,
   2.7 % top-1 on digits-cnn; right with a dynamic batch or a batch of 64; ORT is right on the
   same file). The second linear of such a pair is left float (its input Q/DQ goes away), which
   OpenVINO runs right; it is r x out MACs, a few percent of the layer pair. Factorized convs
   (conv no-bias -> Q/DQ -> 1x1 conv) are not affected.

OpenVINO converts the same QDQ ONNX; it fuses the extra Q/DQ pairs (int8 conv output, int8
eltwise add) as it does for ORT's PTQ files.
"""

from __future__ import annotations

from typing import Any


def ort_x86_quantizer(quantization_config: Any, float_first: int = 0) -> Any:
    """An X86InductorQuantizer (global `quantization_config`) whose annotation ORT's QDQ fusions
    turn into QLinearConv / QLinearAdd / QGemm, with the first `float_first` conv / linear nodes
    left float (module doc)."""
    import torch
    from torchao.quantization.pt2e.quantizer import (
        DerivedQuantizationSpec,
        get_input_act_qspec,
        get_output_act_qspec,
    )
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        QUANT_ANNOTATION_KEY,
        X86InductorQuantizer,
        _X86InductorQuantizationAnnotation,
    )

    aten = torch.ops.aten
    convs = (aten.conv1d.default, aten.conv2d.default)
    pads = (aten.pad.default, aten.constant_pad_nd.default)
    adds = (aten.add.Tensor, aten.add_.Tensor)

    def bias_qparams(obs: list[Any]) -> tuple[Any, Any]:
        act_scale, _ = obs[0].calculate_qparams()
        w_scale, _ = obs[1].calculate_qparams()
        scale = (act_scale.float() * w_scale.float()).reshape(-1)
        return scale, torch.zeros_like(scale, dtype=torch.int32)

    def annotation(node: Any) -> Any:
        return node.meta.get(QUANT_ANNOTATION_KEY) if isinstance(node, torch.fx.Node) else None

    def quantized_output(node: Any) -> bool:
        """`node`'s output carries (or shares) an int8 observer."""
        qa = annotation(node)
        return qa is not None and qa.output_qspec is not None

    def is_float_tensor(node: Any) -> bool:
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        return isinstance(val, torch.Tensor) and val.dtype.is_floating_point

    class _OrtQDQX86Quantizer(X86InductorQuantizer):
        # binary (add) fusions off: ORT has no QLinearConv + Add; the conv output needs its own Q
        def _annotate_conv2d_binary_unary(self, *a: Any, **k: Any) -> None:
            return None

        def _annotate_conv2d_binary(self, *a: Any, **k: Any) -> None:
            return None

        def _annotate_qat_conv2d_bn_binary_unary(self, *a: Any, **k: Any) -> None:
            return None

        def _annotate_qat_conv2d_bn_binary(self, *a: Any, **k: Any) -> None:
            return None

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            super().annotate(model)
            cfg = self.global_config
            if cfg is None:
                return model
            self._leave_float(model, float_first)
            self._float_linear_after_linear(model)
            # in graph order, so a pad / add sees its producers' outputs already annotated
            for node in model.graph.nodes:
                if node.op != "call_function":
                    continue
                if node.target in convs:
                    self._quantize_conv_output(node, cfg)
                elif node.target in pads:
                    self._annotate_pad(node, cfg)
                elif node.target in adds:
                    self._annotate_add(node, cfg)
                elif node.target is aten.linear.default:
                    self._quantize_linear_bias(node)
            return model

        @staticmethod
        def _leave_float(model: torch.fx.GraphModule, n: int) -> None:
            """Drop the annotation of the first `n` conv / linear nodes and of the activation
            fused with each (module doc, 4); their consumers still quantize their own inputs."""
            weighted = [nd for nd in model.graph.nodes
                        if nd.op == "call_function" and nd.target in (*convs, aten.linear.default)]
            for node in weighted[:n]:
                _OrtQDQX86Quantizer._unannotate(node)

        @staticmethod
        def _unannotate(node: Any) -> None:
            """Drop the annotation of `node` and of the activation fused with it (it stays float)."""
            out = node
            while True:
                qa = annotation(out)
                if qa is None:
                    break
                out.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(_annotated=True)
                users = list(out.users)
                if qa._is_output_of_quantized_pattern or len(users) != 1:
                    break
                out = users[0]

        @staticmethod
        def _float_linear_after_linear(model: torch.fx.GraphModule) -> None:
            """A linear fed straight by another linear (the lowrank pass's Linear(in, r, no bias)
            + Linear(r, out)) stays float (module doc, 5)."""
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target is aten.linear.default and node.args \
                        and isinstance(node.args[0], torch.fx.Node) \
                        and node.args[0].target is aten.linear.default and annotation(node) is not None:
                    _OrtQDQX86Quantizer._unannotate(node)

        @staticmethod
        def _quantize_conv_output(conv: Any, cfg: Any) -> None:
            """Q/DQ right after the conv, or after the activation fused with it (ORT's
            QLinearConv absorbs Relu / Clip before a Q)."""
            qa = annotation(conv)
            if qa is None or not qa.input_qspec_map:  # not quantized (config None / filtered)
                return
            out = conv
            if not qa._is_output_of_quantized_pattern:  # conv + unary (or conv + bn + unary)
                users = list(conv.users)
                while len(users) == 1 and annotation(users[0]) is not None:
                    out = users[0]
                    if annotation(out)._is_output_of_quantized_pattern:
                        break
                    users = list(out.users)
                if not annotation(out)._is_output_of_quantized_pattern:
                    return
            out_qa = annotation(out)
            if out_qa.output_qspec is None:
                out_qa.output_qspec = get_output_act_qspec(cfg)

        @staticmethod
        def _annotate_pad(pad: Any, cfg: Any) -> None:
            """A zero constant pad whose users are all quantized convs: the convs' input Q/DQ
            goes before the pad (module doc, pattern 1), the pad itself stays float."""
            src = pad.args[0]
            if pad.target is aten.pad.default:
                mode = pad.args[2] if len(pad.args) > 2 else pad.kwargs.get("mode", "constant")
                value = pad.args[3] if len(pad.args) > 3 else pad.kwargs.get("value")
            else:  # constant_pad_nd(input, pad, value=0)
                mode, value = "constant", pad.args[2] if len(pad.args) > 2 else pad.kwargs.get("value", 0)
            if mode != "constant" or value not in (None, 0, 0.0) or not is_float_tensor(src):
                return
            if annotation(pad) is not None and annotation(pad)._annotated:
                return
            users = list(pad.users)
            if not users or not all(
                u.target in convs and annotation(u) is not None and pad in annotation(u).input_qspec_map
                and u.args[0] is pad
                for u in users
            ):
                return
            for u in users:
                del annotation(u).input_qspec_map[pad]
            pad.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(
                input_qspec_map={src: get_input_act_qspec(cfg)}, _annotated=True
            )

        @staticmethod
        def _quantize_linear_bias(linear: Any) -> None:
            """int32 bias, scale s_x * s_w per output channel (module doc, pattern 3)."""
            qa = annotation(linear)
            if qa is None or len(linear.args) < 3 or not isinstance(linear.args[2], torch.fx.Node):
                return
            x, w, b = linear.args[:3]
            if x not in qa.input_qspec_map or w not in qa.input_qspec_map:
                return
            w_spec = qa.input_qspec_map[w]
            if w_spec is None or getattr(w_spec, "ch_axis", None) != 0:
                return
            qa.input_qspec_map[b] = DerivedQuantizationSpec(
                derived_from=[(x, linear), (w, linear)],
                derive_qparams_fn=bias_qparams,
                dtype=torch.int32,
                quant_min=-(2**31),
                quant_max=2**31 - 1,
                qscheme=torch.per_channel_symmetric,
                ch_axis=0,
            )

        @staticmethod
        def _annotate_add(add: Any, cfg: Any) -> None:
            """An add of two quantized float tensors (a residual): quantized inputs and output,
            ORT's QLinearAdd pattern. Adds of anything else stay float (an attention-mask add,
            range ~ -3e38..0, must not be quantized)."""
            if annotation(add) is not None and annotation(add)._annotated:
                return
            if len(add.args) < 2 or add.kwargs.get("alpha", 1) != 1:
                return
            a, b = add.args[0], add.args[1]
            if a is b or not all(is_float_tensor(n) and quantized_output(n) for n in (a, b)):
                return
            add.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(
                input_qspec_map={a: get_input_act_qspec(cfg), b: get_input_act_qspec(cfg)},
                output_qspec=get_output_act_qspec(cfg),
                _annotated=True,
                _is_output_of_quantized_pattern=True,
            )

    quantizer = _OrtQDQX86Quantizer()
    quantizer.set_global(quantization_config)
    return quantizer
