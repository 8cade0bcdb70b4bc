"""A classifier's network as two ONNX graphs, written from its weights with `onnx.helper` (no torch exporter).

    encoder.onnx   one chunk step of the encoder, the recurrent state in and out:
                   ids (B, T) int64, state... -> out (B, T, emb_sz) float32, new state...
    head.onnx      PoolingLinearClassifier's layers after the pooling, and the task's activation (softmax,
                   sigmoid for multi-label, none for regression):
                   features (B, 3 * emb_sz) float32 -> outputs (B, n_out) float32

fastai's SentenceEncoder loop around the encoder (which rows take part in each chunk, which chunks are kept) and
the masked concat pooling run in numpy (`ulmfit.onnx_runtime`): they are a few lines of indexing there, while in
ONNX they would be a Loop whose batch grows from chunk to chunk.

Why the graphs are written here rather than traced: torch's TorchScript exporter is deprecated (it warns that it
will be removed), and its torch.export-based successor needs onnxscript and took ~8 s for a single LSTM layer on a
2-core machine. The encoders are a handful of ONNX ops: AWD-LSTM layers map onto ONNX's LSTM operator (gates
reordered), and the QRNN's forget-mult onto a Scan, so its recurrence stays one op for any chunk length instead of
being unrolled into seq_len copies. `ulmfit.export` checks every export against torch before it is written.

State layout, recorded in export.json (`StateSpec`): per AWD-LSTM layer h and c, each (n_dir, B, hidden); per QRNN
layer its cell state c (B, hidden), and for the first layer (window 2) its last input x (B, emb_sz). Rows are the
batch: a new document starts from zeros, as fastai's encoders do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ulmfit.errors import UlmfitError
from ulmfit.lm.model import module_arch

OPSET = 17
IR_VERSION = 8  # the oldest IR that carries opset 17: readable by every ONNX Runtime since 1.12
_FLOAT = TensorProto.FLOAT
# torch packs an LSTM's gates as (input, forget, cell, output), ONNX as (input, output, forget, cell)
_TORCH_TO_ONNX_GATES = [0, 3, 1, 2]


@dataclass
class StateSpec:
    """One recurrent state tensor of the encoder graph: its input name (the output adds "new_"), its shape with
    -1 for the batch, and which axis is the batch."""

    name: str
    shape: list[int]
    batch_axis: int

    def to_dict(self) -> dict:
        return asdict(self)


class _Graph:
    """Nodes, initializers and unique names for one graph under construction."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        arr = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
        self.inits.append(numpy_helper.from_array(arr.copy(order="C"), name))  # (ascontiguousarray turns 0-d to 1-d)
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, name: str, inputs: list, outputs: list) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="ulmfit", ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy()


# ------------------------------------------------------------------------------------------------- encoder


def encoder_graph(encoder) -> tuple[onnx.ModelProto, list[StateSpec]]:
    """The chunk step of an eval-mode AWD_LSTM (its weight-dropout wrappers removed: `inference_model`) or QRNN.

    Dropouts are identities in eval mode, so a chunk is: embedding, then each recurrent layer."""
    arch = module_arch(encoder)
    g = _Graph()
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "time"])
    ids_tm = g.op("Transpose", ["ids"], perm=[1, 0])                                  # (T, B)
    x = g.op("Gather", [g.const("embedding", _np(encoder.encoder_dp.emb.weight)), ids_tm], axis=0)  # (T, B, E)
    layer = _lstm_layer if arch == "awd_lstm" else _qrnn_layer
    states: list[StateSpec] = []
    new_states: list[str] = []
    for i, rnn in enumerate(encoder.rnns):
        x, specs, outs = layer(g, i, rnn, x)
        states += specs
        new_states += outs
    out = g.op("Transpose", [x], perm=[1, 0, 2])                                       # (B, T, E)
    # rename the final values to the graph's output names
    g.nodes.append(helper.make_node("Identity", [out], ["out"]))
    for spec, value in zip(states, new_states):
        g.nodes.append(helper.make_node("Identity", [value], [f"new_{spec.name}"]))

    def info(spec: StateSpec, prefix: str = ""):
        dims = ["batch" if d < 0 else d for d in spec.shape]
        return helper.make_tensor_value_info(prefix + spec.name, _FLOAT, dims)

    inputs = [ids] + [info(s) for s in states]
    outputs = ([helper.make_tensor_value_info("out", _FLOAT, ["batch", "time", encoder.emb_sz])]
               + [info(s, "new_") for s in states])
    return g.model(f"{arch}_chunk", inputs, outputs), states


def _lstm_layer(g: _Graph, i: int, lstm, x: str) -> tuple[str, list[StateSpec], list[str]]:
    """ONNX's LSTM operator on time-major x (T, B, n_in) -> (T, B, n_dir * hidden)."""
    import torch

    if not isinstance(lstm, torch.nn.LSTM) or lstm.num_layers != 1 or getattr(lstm, "proj_size", 0):
        raise UlmfitError(f"encoder layer {i} is a {type(lstm).__name__}, not a one-layer nn.LSTM",
                          hint="export reads the network Classifier.load builds; is this bundle from ulmfit?")
    n_dir, hid = (2 if lstm.bidirectional else 1), lstm.hidden_size
    suffixes = [""] + (["_reverse"] if n_dir == 2 else [])

    def gates(name: str, sfx: str) -> np.ndarray:
        w = getattr(lstm, f"{name}_l0{sfx}", None)
        w = np.zeros(4 * hid, np.float32) if w is None else _np(w)  # bias=False
        return w.reshape(4, hid, *w.shape[1:])[_TORCH_TO_ONNX_GATES].reshape(4 * hid, *w.shape[1:])

    w = np.stack([gates("weight_ih", s) for s in suffixes])                          # (D, 4H, n_in)
    r = np.stack([gates("weight_hh", s) for s in suffixes])                          # (D, 4H, H)
    b = np.stack([np.concatenate([gates("bias_ih", s), gates("bias_hh", s)]) for s in suffixes])  # (D, 8H)
    h0, c0 = StateSpec(f"h{i}", [n_dir, -1, hid], 1), StateSpec(f"c{i}", [n_dir, -1, hid], 1)
    y, y_h, y_c = g.op("LSTM", [x, g.const(f"lstm{i}.W", w), g.const(f"lstm{i}.R", r), g.const(f"lstm{i}.B", b),
                                "", h0.name, c0.name], n_out=3, hidden_size=hid,
                       direction="bidirectional" if n_dir == 2 else "forward")
    # Y is (T, D, B, H); torch concatenates the directions' features: (T, B, D * H)
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
    y = g.op("Reshape", [y, g.const(f"lstm{i}.shape", [0, 0, -1])])
    return y, [h0, c0], [y_h, y_c]


def _qrnn_layer(g: _Graph, i: int, layer, x: str) -> tuple[str, list[StateSpec], list[str]]:
    """`ulmfit.lm.qrnn.QRNNLayer.forward` on time-major x (T, B, n_in) -> (T, B, n_out)."""
    n = layer.n_out
    c0 = StateSpec(f"c{i}", [-1, n], 0)
    specs, outs = [c0], []
    src = x
    if layer.window == 2:  # [x[t-1], x[t]], x[-1] being the previous chunk's last input
        x0 = StateSpec(f"x{i}", [-1, layer.n_in], 0)
        specs.append(x0)
        prev = g.op("Unsqueeze", [x0.name, g.const(f"qrnn{i}.axis0", [0])])
        head = g.op("Slice", [x, g.const(f"qrnn{i}.start", [0]), g.const(f"qrnn{i}.stop", [-1]),
                              g.const(f"qrnn{i}.axes", [0])])
        shifted = g.op("Concat", [prev, head], axis=0)
        src = g.op("Concat", [shifted, x], axis=-1)
    wt = _np(layer.linear.weight).T                                                  # (window * n_in, 3n)
    gates = g.op("Add", [g.op("MatMul", [src, g.const(f"qrnn{i}.W", wt)]),
                         g.const(f"qrnn{i}.b", _np(layer.linear.bias))])             # (T, B, 3n)
    z, f, o = g.op("Split", [gates, g.const(f"qrnn{i}.split", [n, n, n])], n_out=3, axis=-1)
    z, f = g.op("Tanh", [z]), g.op("Sigmoid", [f])
    c_last, c_all = g.op("Scan", [c0.name, z, f], n_out=2, num_scan_inputs=2, body=_forget_mult_body(n))
    h = g.op("Mul", [g.op("Sigmoid", [o]), c_all])
    outs.append(c_last)
    if layer.window == 2:
        outs.append(g.op("Gather", [x, g.const(f"qrnn{i}.last", -1)], axis=0))        # x[-1]: (B, n_in)
    return h, specs, outs


def _forget_mult_body(n: int) -> onnx.GraphProto:
    """One step of the forget-mult: c = c_prev + f * (z - c_prev), which is torch.lerp(c_prev, z, f)."""
    nodes = [helper.make_node("Sub", ["z", "c_prev"], ["diff"]),
             helper.make_node("Mul", ["f", "diff"], ["step"]),
             helper.make_node("Add", ["c_prev", "step"], ["c"]),
             helper.make_node("Identity", ["c"], ["c_out"])]
    def vi(name: str):
        return helper.make_tensor_value_info(name, _FLOAT, ["batch", n])

    return helper.make_graph(nodes, "forget_mult", [vi("c_prev"), vi("z"), vi("f")], [vi("c"), vi("c_out")])


# ---------------------------------------------------------------------------------------------------- head


ACTIVATIONS = {"softmax": "Softmax", "sigmoid": "Sigmoid", "none": "Identity"}  # Task.activation -> ONNX op


def head_graph(head, n_features: int, activation: str = "softmax") -> onnx.ModelProto:
    """PoolingLinearClassifier.layers (fastai's LinBnDrop blocks: BatchNorm1d, Dropout, Linear, ReLU) in eval
    mode, then the task's activation (`predict_ids`'): pooled features (B, n_features) -> outputs (B, n_out)."""
    from torch import nn

    g = _Graph()
    x = "features"
    leaves = [m for m in head.layers.modules() if not list(m.children())]
    containers = [m for m in head.layers.modules() if list(m.children())]
    if any(not isinstance(m, nn.Sequential) for m in containers):  # only a Sequential runs its children in order
        raise UlmfitError("the classifier head holds a block that is not a plain sequence of layers",
                          hint="export knows fastai's PoolingLinearClassifier; is this bundle from ulmfit?")
    for k, m in enumerate(leaves):
        if isinstance(m, nn.BatchNorm1d):
            eps = float(m.eps)
            weight = _np(m.weight) if m.affine else np.ones(m.num_features, np.float32)
            bias = _np(m.bias) if m.affine else np.zeros(m.num_features, np.float32)
            x = g.op("BatchNormalization", [x, g.const(f"bn{k}.scale", weight), g.const(f"bn{k}.bias", bias),
                                            g.const(f"bn{k}.mean", _np(m.running_mean)),
                                            g.const(f"bn{k}.var", _np(m.running_var))], epsilon=eps)
        elif isinstance(m, nn.Dropout):
            continue  # eval mode
        elif isinstance(m, nn.Linear):
            inputs = [x, g.const(f"linear{k}.W", _np(m.weight))]
            if m.bias is not None:
                inputs.append(g.const(f"linear{k}.b", _np(m.bias)))
            x = g.op("Gemm", inputs, transB=1)
        elif isinstance(m, nn.ReLU):
            x = g.op("Relu", [x])
        else:
            raise UlmfitError(f"cannot export the head layer {type(m).__name__} to ONNX",
                              hint="export knows BatchNorm1d, Dropout, Linear and ReLU (fastai's LinBnDrop)")
    n_out = next(m.out_features for m in reversed(leaves) if isinstance(m, nn.Linear))
    attrs = {"axis": -1} if activation == "softmax" else {}
    g.nodes.append(helper.make_node(ACTIVATIONS[activation], [x], ["outputs"], **attrs))
    return g.model("head", [helper.make_tensor_value_info("features", _FLOAT, ["batch", n_features])],
                   [helper.make_tensor_value_info("outputs", _FLOAT, ["batch", n_out])])

