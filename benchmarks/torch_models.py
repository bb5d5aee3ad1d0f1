"""Transformer architectures written with PyTorch's own modules (random weights), exported to ONNX by
torch.onnx: a ViT-B/16 (patch embedding by a 16x16/16 convolution, 12 pre-norm encoder layers run
sequence-first as nn.MultiheadAttention does inside) and a GPT-style decoder stack (12 layers, causal mask,
no KV cache). torchvision and transformers are not installed here (PyPI's torchvision 0.28 wheel is a CUDA
build); these use only torch.nn."""

from __future__ import annotations

import io
import warnings

import onnx


def _export(module, args, names: list[str]) -> onnx.ModelProto:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused inference path has no ONNX export
        try:
            torch.onnx.export(module.eval(), args, buf, opset_version=17, dynamo=False, input_names=names)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
    return onnx.load_from_string(buf.getvalue())


def vit_b16(layers: int = 12, d: int = 768, heads: int = 12) -> onnx.ModelProto:
    import torch
    from torch import nn

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, d, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 197, d) * 0.02)
            layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", norm_first=True)
            self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, 1000)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            x = self.enc(x.transpose(0, 1)).transpose(0, 1)
            return self.head(self.norm(x[:, 0]))

    torch.manual_seed(0)
    return _export(ViT(), (torch.randn(1, 3, 224, 224),), ["image"])


def gpt_decoder(layers: int = 12, d: int = 768, heads: int = 12, seq: int = 128, vocab: int = 8192) -> onnx.ModelProto:
    import torch
    from torch import nn

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
            layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", norm_first=True,
                                               batch_first=True)  # fmt: skip
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)
            self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1))

        def forward(self, ids):
            x = self.tok(ids) + self.pos
            return self.head(self.norm(self.blocks(x, mask=self.mask)))

    torch.manual_seed(0)
    return _export(GPT(), (torch.randint(0, vocab, (1, seq)),), ["ids"])


def torch_models() -> list[tuple[str, onnx.ModelProto]]:
    """The models above, or none when PyTorch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return []
    return [("vit_b16 (torch.nn)", vit_b16()), ("gpt_decoder_12x768_seq128 (torch.nn)", gpt_decoder())]


def resnet50(batch: int = 1) -> onnx.ModelProto:
    """torchvision's ``resnet50(weights=None)`` architecture (Bottleneck blocks [3, 4, 6, 3], stride on the 3x3
    conv as in torchvision >= 0.8, the same Kaiming-normal initialization, BatchNorm with weight 1 and bias 0),
    written with torch.nn because torchvision cannot be installed with torch 2.13.0+cpu here."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + idt)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))  # fmt: skip
            blocks, cin = [], 64
            for width, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
                for i in range(n):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = width * 4
            self.layers = nn.Sequential(*blocks)
            self.fc = nn.Linear(2048, 1000)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    return _export(ResNet50(), (torch.randn(batch, 3, 224, 224),), ["input"])
