"""Keep ONNX Runtime's Softmax on its fast path under additive attention masks.

ORT 1.32's CPU Softmax (MLAS) runs about 9x slower on a row where some logits sit more than ~87
below the row's max: their exp() underflows into denormals and every such element takes the slow
path, and `session.set_denormal_as_zero` does not help at one thread. An encoder's padding mask adds
finfo(float32).min to the padded keys, so a MiniLM sentence of 20 tokens padded to 128 spent 5.3 of
its 18.5 ms (int8) in Softmax instead of 0.5 (benchmarks/RESULTS-minilm.md). No quantizer or
exporter we use rewrites this, hence this pass.

The rewrite, for each Softmax fed by an Add (the mask add): `x = Max(x, ReduceMax(x) - 80)`. Every
exp() argument is then >= -80, a normal float; a masked weight becomes <= e^-80 ~ 2e-35 of the
row's sum instead of exactly 0, far below float32 resolution of the other weights.
"""

from __future__ import annotations

from pathlib import Path

FLOOR = 80.0  # exp(-80) = 1.8e-35 > FLT_MIN (1.2e-38): normal, so MLAS stays on its fast path


def guard_masked_softmax(path: Path) -> int:
    """Rewrite `path` in place; returns how many Softmax nodes were guarded."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 18:  # ReduceMax takes `axes` as an input from opset 18 on; older graphs stay as they are
        return 0
    producer = {o: n for n in graph.node for o in n.output}
    targets = [n for n in graph.node if n.op_type == "Softmax" and n.domain in ("", "ai.onnx")
               and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "Add"]
    if not targets:
        return 0
    floor = "edgecompress_softmax_floor"
    graph.initializer.append(numpy_helper.from_array(np.array(FLOOR, np.float32), floor))
    nodes = list(graph.node)
    for k, sm in enumerate(targets):
        axis = next((a.i for a in sm.attribute if a.name == "axis"), -1)
        axes, x = f"{floor}_axes{k}", sm.input[0]
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
        names = [f"{sm.name or 'softmax'}_guard{k}_{s}" for s in ("max", "low", "out")]
        new = [helper.make_node("ReduceMax", [x, axes], [names[0]], keepdims=1, name=names[0]),
               helper.make_node("Sub", [names[0], floor], [names[1]], name=names[1]),
               helper.make_node("Max", [x, names[1]], [names[2]], name=names[2])]
        sm.input[0] = names[2]
        i = nodes.index(sm)
        nodes[i:i] = new  # just before the Softmax: topological order kept
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(targets)
