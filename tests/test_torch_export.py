"""PyTorch models through torch.export and the core-ATen importer (frontends/torch_export.py), against eager
PyTorch: each model is built here with random weights, in eval mode, and run on fresh random inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import tensorforge as tfg

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from tensorforge.frontends.torch_export import export_program, import_exported  # noqa: E402


def _fresh(a, example):
    if example.dtype == torch.int64:  # indices: within the example's range
        return torch.randint(0, int(example.max()) + 1, a.shape)
    return torch.randn(a.shape, dtype=a.dtype)


def check(model, args, *, shapes=None, **kw):
    """Compile ``model`` from ``args`` and compare it with eager PyTorch on fresh inputs (of ``shapes``)."""
    model.eval()
    compiled = tfg.from_torch(model, args, **kw)
    torch.manual_seed(1234)
    for shape_set in shapes or [[tuple(a.shape) for a in args]]:
        fresh = tuple(_fresh(torch.empty(s, dtype=a.dtype), a) for a, s in zip(args, shape_set))
        with torch.no_grad():
            want = [w.numpy() for w in torch.utils._pytree.tree_leaves(model(*fresh))]
        got = compiled(*[a.numpy() for a in fresh])
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
    return compiled


# -------------------------------------------------------------------------------------------------
# models
# -------------------------------------------------------------------------------------------------
def test_mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 5),
                        nn.Softmax(dim=-1))  # fmt: skip
    check(net, (torch.randn(3, 20),))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18ish(nn.Module):
    """ResNet-18's topology (4 stages of 2 basic blocks, downsampling shortcuts) at 1/8 of its width."""

    def __init__(self, widths=(8, 16, 32, 64), classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_bn(net):
    """Running statistics other than 0/1, so that batch norm is really tested."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net


def test_parameter_and_input_names():
    net = ResNet18ish().eval()
    g = import_exported(export_program(net, (torch.randn(1, 3, 32, 32),)), "resnet")
    names = {v.name for v in g.constants()}
    assert {"layer1.0.conv1.weight", "layer2.0.downsample.1.running_var", "fc.bias"} <= names
    assert [v.name for v in g.inputs] == ["x"] and g.output_names == ["output"]


@pytest.mark.slow
def test_resnet18_shaped():
    torch.manual_seed(0)
    check(_randomize_bn(ResNet18ish()), (torch.randn(2, 3, 32, 32),))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def test_mobilenet_v2_shaped():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardtanh(0.0, 6.0),
                        InvertedResidual(8, 8, 1, 1), InvertedResidual(8, 12, 2, 6), InvertedResidual(12, 12, 1, 6),
                        nn.Conv2d(12, 4, 3, padding=1, groups=4), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 7))  # fmt: skip
    check(_randomize_bn(net), (torch.randn(2, 3, 24, 24),))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("no_grad", [False, True])
def test_transformer_encoder(batch_first, no_grad):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=batch_first, norm_first=not batch_first)
    net = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn((3, 7, 16) if batch_first else (7, 3, 16))
    if no_grad:  # the fused fast path (aten::_transformer_encoder_layer_fwd) that the ONNX exporter refused
        with torch.no_grad():
            check(net, (x,))
    else:
        check(net, (x,))


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        out, weights = self.mha(x, x, x)
        return out, weights


def test_multihead_attention_eval():
    torch.manual_seed(0)
    with torch.no_grad():
        check(SelfAttention(), (torch.randn(2, 5, 16),))
    cross = nn.MultiheadAttention(16, 4, kdim=8, vdim=12).eval()
    check(cross, (torch.randn(5, 2, 16), torch.randn(6, 2, 8), torch.randn(6, 2, 12)))


class GPTBlock(nn.Module):
    """Token and position embeddings, pre-norm causal attention (both through SDPA and written out with
    masked_fill over a triu mask), a GELU MLP, residuals and a tied-free LM head."""

    def __init__(self, vocab=50, ctx=16, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, vocab, bias=False)

    def attend(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (fused + att @ v) * 0.5
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        x = x + self.attend(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


def test_gpt_block():
    torch.manual_seed(0)
    check(GPTBlock(), (torch.randint(0, 50, (2, 9)),))


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm(layers):
    torch.manual_seed(0)
    check(nn.LSTM(6, 10, layers, batch_first=True), (torch.randn(2, 5, 6),))


class ManyOps(nn.Module):
    """The converters the models above do not reach: transposed and 1-D convolution, PReLU, group norm,
    pooling variants, flips, pads, gathers, integer division, reductions to bool, resizing, sorting."""

    def __init__(self):
        super().__init__()
        self.ct = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.c1 = nn.Conv1d(3, 5, 3, padding=2, dilation=2)
        self.prelu = nn.PReLU(4)
        self.gn = nn.GroupNorm(2, 4)
        self.register_buffer("idx", torch.tensor([2, 0, 1]))

    def forward(self, x, ids):
        a = self.gn(self.prelu(self.ct(x)))
        b = F.avg_pool2d(a, 3, 2, 1, count_include_pad=False) + F.adaptive_avg_pool2d(a, (8, 8))
        c = F.leaky_relu(b, 0.2) - F.elu(b, 0.5) + torch.clamp(b, -0.3, 0.4) + F.hardswish(b) * F.silu(b)
        d = torch.flip(c, [1, 3]).repeat(1, 2, 1, 1)
        f = torch.cumsum(F.pad(d, (1, 2, 0, 1), value=0.5), dim=-1).log_softmax(-1)
        g = self.c1(x.mean(2))
        h = torch.gather(g, 2, ids.expand(2, 5, 3)) + g.index_select(2, self.idx) + g[:, :, self.idx]
        am = f.argmax(-1) + f.max(dim=-1).indices
        q = torch.div(am, 3, rounding_mode="floor") + torch.remainder(am, 5) - torch.div(-am, 4, rounding_mode="trunc")
        r = torch.tril(f[0, 0], diagonal=1).sum() + (f > 0).any(dim=1).sum() + (f < 1).all()
        t = torch.baddbmm(g, g, torch.ones(2, 8, 8) * 0.1, beta=0.5, alpha=2.0)
        w = torch.where(h > 0, h.sqrt(), -h).rsqrt()
        y = x[:, :2, :4, :4]
        up = F.interpolate(y, scale_factor=2) + F.interpolate(y, size=(8, 8), mode="bilinear")
        top = torch.topk(h, 2)
        return (f, h, q, r, t, w, torch.fmod(h, 0.7), h.abs().pow(1.5), torch.sigmoid(h).amin(dim=(0, 2)), up,
                F.interpolate(y, size=(5, 7), mode="bilinear", align_corners=True), top.values, top.indices,
                h.sort(descending=True).values, h.var(2), torch.var_mean(h, 1)[1], torch.log1p(h.abs() * 1e-6),
                torch.expm1(h * 1e-6), torch.expm1(h), torch.logsumexp(h, 1), F.normalize(h), h.log2(), h.exp2(),
                torch.erfc(h), F.glu(g, 2), torch.einsum("bij,bjk->bik", h, h.transpose(1, 2)))  # fmt: skip


def test_many_ops():
    torch.manual_seed(0)
    check(ManyOps(), (torch.randn(2, 3, 8, 8), torch.randint(0, 8, (1, 1, 3))))


# -------------------------------------------------------------------------------------------------
# dynamic shapes, names, files, errors
# -------------------------------------------------------------------------------------------------
def test_dynamic_batch_and_sequence():
    torch.manual_seed(0)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=16)
    m = check(GPTBlock(), (torch.randint(0, 50, (2, 9)),), dynamic_shapes={"idx": {0: batch, 1: seq}},
              shapes=[[(2, 9)], [(5, 4)]])  # fmt: skip
    assert m.inputs[0].shape == ("batch", "seq")


def test_dynamic_batch_flag_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3))  # fmt: skip
    check(_randomize_bn(net), (torch.randn(1, 3, 8, 8),), dynamic_batch=True, shapes=[[(1, 3, 8, 8)], [(4, 3, 8, 8)]])


class Reduce(nn.Module):
    def forward(self, x, y):
        return (x * y).sum(), x.amax(dim=1), torch.where(x > y, x, y).mean(dim=(0, 1), keepdim=True)


def test_scalar_output_stays_0d_and_input_names():
    m = check(Reduce(), (torch.randn(3, 4), torch.randn(3, 4)), input_names=["a", "b"])
    assert [s.name for s in m.inputs] == ["a", "b"]
    out = m(a=np.ones((3, 4), np.float32), b=np.full((3, 4), 2.0, np.float32))
    assert out[0].shape == () and float(out[0]) == 24.0


def test_pt2_round_trip(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(2, 2, 6, 6)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(path))
    m = tfg.from_torch(str(path))
    assert m.name == "net"
    y = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        np.testing.assert_allclose(m(y.numpy()), net(y).numpy(), rtol=1e-4, atol=1e-5)
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(tfg.ModelLoadError, match="bad.pt2"):
        tfg.from_torch(str(bad))


@torch.library.custom_op("tfgtest::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x):
    return torch.empty_like(x)


class UsesCustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return torch.ops.tfgtest.twice(h) + 1  # the unsupported op's line


def test_unsupported_op_names_op_and_source_line():
    with pytest.raises(tfg.UnsupportedError) as e:
        tfg.from_torch(UsesCustomOp(), (torch.randn(2, 4),))
    msg = str(e.value)
    assert "tfgtest.twice.default" in msg
    assert "test_torch_export.py:" in msg and "torch.ops.tfgtest.twice(h) + 1" in msg


def test_default_path_is_quiet(capfd):
    """No DeprecationWarning (the TorchScript exporter's) and no graph dump on stderr."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tfg.from_torch(net, (torch.randn(3, 4),))
    noisy = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert not noisy, [str(w.message) for w in noisy]
    assert "graph(" not in capfd.readouterr().err


def test_onnx_path_still_available():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    m = tfg.from_torch(net, (x,), via="onnx")
    with torch.no_grad():
        np.testing.assert_allclose(m(x.numpy()), net(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(tfg.TensorforgeError, match="via"):
        tfg.from_torch(net, (x,), via="tflite")
