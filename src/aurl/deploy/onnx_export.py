"""A MusicTransformer as two ONNX graphs, and their INT8 (dynamic) quantization.

Shape legend
  B  batch     T  tokens in a prefill     S  cache slots (a capacity, not the valid length)
  L  layers    H  heads     D  head width     C  model width     V  vocabulary

``prefill.onnx``: tokens (B, T) -> logits (B, T, V), keys and values (L, B, H, T, D): the
full-context forward (evaluation, and the first step of generation).
``decode.onnx``: one token per row with the KV cache as explicit inputs -> logits (B, V) and only
*this step's* keys/values (L, B, H, 1, D). The cache stays in a preallocated buffer the caller owns
(``aurl.deploy.onnx_model``): the graph attends to the buffer under a (B, S) mask and never
concatenates it, so a step costs no copy of the whole cache (the first ONNX export measured 1.5-1.8x
slower than torch at batch 8-16 because it did). The new token's own key enters the softmax beside
the cached scores ("split softmax"). Positions come per row, so rows may sit at different positions.

Both graphs reuse the model's own modules (embeddings, norms, projections, MLP), exported with the
TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript, not installed).
INT8 is onnxruntime's dynamic quantization (weights int8 per channel, activations quantized on the
fly); ``torch.ao.quantization`` is deprecated.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PREFILL_FILE = "prefill.onnx"
DECODE_FILE = "decode.onnx"
WEIGHTS_FILE = "weights.bin"
"""Both graphs read their (identical) weights from this one file (ONNX external data)."""
INLINE_BYTES = 1024
"""Tensors smaller than this stay inside the graph files."""
OPSET = 17


def _rope(model: nn.Module, positions: Tensor) -> tuple[Tensor, Tensor]:
    """(cos, signed sin) each (..., D) for integer ``positions`` (...), as ``Rotary._build``."""
    rot = model.rotary
    inv_freq = 1.0 / rot.base ** (torch.arange(0, rot.head_dim, 2).float() / rot.head_dim)  # (D/2,)
    freqs = positions.float()[..., None] * inv_freq  # (..., D/2)
    cos = torch.cat([freqs, freqs], dim=-1).cos()
    sin = torch.cat([-freqs.sin(), freqs.sin()], dim=-1)
    return cos, sin


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``apply_rotary`` with the roll written as a slice swap (exports to plain ONNX ops)."""
    half = x.shape[-1] // 2
    rolled = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rolled * sin


class Prefill(nn.Module):
    """tokens (B, T) -> logits (B, T, V), keys (L, B, H, T, D), values (L, B, H, T, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.m
        B, T = tokens.shape
        x = m.tok_emb(tokens)  # (B, T, C)
        pos = torch.arange(T, device=tokens.device)
        if m.pos_emb is not None:
            x = x + m.pos_emb(pos)
        cos = sin = None
        if m.rotary is not None:
            cos, sin = _rope(m, pos)  # (T, D)
            cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, D)
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()  # (T, T)
        keys, values = [], []
        for block in m.blocks:
            attn = block.attn
            H, D = attn.n_heads, attn.head_dim
            qkv = attn.qkv(block.norm1(x)).view(B, T, 3, H, D)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, D)
            if cos is not None:
                q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)  # (B, H, T, T)
            scores = scores.masked_fill(~causal, float("-inf"))
            y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, -1))
            x = x + block.mlp(block.norm2(x))
            keys.append(k)
            values.append(v)
        logits = m.lm_head(m.norm(x))  # (B, T, V)
        return logits, torch.stack(keys), torch.stack(values)


class Decode(nn.Module):
    """One token per row against a cache buffer:

    tokens (B, 1), positions (B,), past_keys/values (L, B, H, S, D), mask (B, S) bool
    -> logits (B, V), keys/values of this token (L, B, H, 1, D).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        past_keys: Tensor,
        past_values: Tensor,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        m = self.m
        B = tokens.shape[0]
        x = m.tok_emb(tokens)  # (B, 1, C)
        if m.pos_emb is not None:
            x = x + m.pos_emb(positions)[:, None]
        cos = sin = None
        if m.rotary is not None:
            cos, sin = _rope(m, positions)  # (B, D)
            cos, sin = cos[:, None, None, :], sin[:, None, None, :]  # (B, 1, 1, D)
        hidden_mask = ~mask[:, None, None, :]  # (B, 1, 1, S): True = not a valid slot
        keys, values = [], []
        for i, block in enumerate(m.blocks):
            attn = block.attn
            H, D = attn.n_heads, attn.head_dim
            qkv = attn.qkv(block.norm1(x)).view(B, 1, 3, H, D)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, 1, H, D)
            if cos is not None:
                q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, 1, D)
            scale = 1.0 / math.sqrt(D)
            past = (q @ past_keys[i].transpose(-1, -2)) * scale  # (B, H, 1, S)
            past = past.masked_fill(hidden_mask, float("-inf"))
            own = (q * k).sum(-1, keepdim=True) * scale  # (B, H, 1, 1)
            p = torch.softmax(torch.cat([past, own], dim=-1), dim=-1)  # (B, H, 1, S+1)
            S = past.shape[-1]
            y = p[..., :S] @ past_values[i] + p[..., S:] * v  # (B, H, 1, D)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp(block.norm2(x))
            keys.append(k)
            values.append(v)
        logits = m.lm_head(m.norm(x))[:, 0]  # (B, V)
        return logits, torch.stack(keys), torch.stack(values)


def check_exportable(model: nn.Module) -> None:
    from aurl.models.cache import supports_rows

    if not supports_rows(model):
        raise ValueError(
            "ONNX export covers decoder-only models with full causal attention (model.attention=full); "
            f"this one has attention={getattr(model.cfg, 'attention', '?')} or is not a MusicTransformer"
        )


def export_graphs(model: nn.Module, out: Path) -> dict[str, Path]:
    """Write ``prefill.onnx`` and ``decode.onnx`` of ``model`` (fp32) into ``out``."""
    check_exportable(model)
    model = model.float().eval()
    cfg = model.cfg
    L, H, D = cfg.n_layers, cfg.n_heads, cfg.d_model // cfg.n_heads
    tokens = torch.ones(2, 5, dtype=torch.long)
    paths = {"prefill": out / PREFILL_FILE, "decode": out / DECODE_FILE}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            Prefill(model), (tokens,), str(paths["prefill"]), dynamo=False, opset_version=OPSET,
            input_names=["tokens"], output_names=["logits", "keys", "values"],
            dynamic_axes={"tokens": {0: "B", 1: "T"}, "logits": {0: "B", 1: "T"},
                          "keys": {1: "B", 3: "T"}, "values": {1: "B", 3: "T"}},
        )  # fmt: skip
        past = torch.zeros(L, 2, H, 7, D)
        example = (
            torch.ones(2, 1, dtype=torch.long), torch.tensor([3, 5]), past, past.clone(),
            torch.ones(2, 7, dtype=torch.bool),
        )  # fmt: skip
        torch.onnx.export(
            Decode(model), example, str(paths["decode"]), dynamo=False, opset_version=OPSET,
            input_names=["tokens", "positions", "past_keys", "past_values", "mask"],
            output_names=["logits", "keys", "values"],
            dynamic_axes={"tokens": {0: "B"}, "positions": {0: "B"},
                          "past_keys": {1: "B", 3: "S"}, "past_values": {1: "B", 3: "S"},
                          "mask": {0: "B", 1: "S"}, "logits": {0: "B"},
                          "keys": {1: "B"}, "values": {1: "B"}},
        )  # fmt: skip
    return paths


def quantize_int8(paths: dict[str, Path]) -> None:
    """Replace each graph by its onnxruntime dynamic INT8 quantization (weights per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for path in paths.values():
        tmp = path.with_suffix(".int8.onnx")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(path)


def share_weights(paths: dict[str, Path]) -> None:
    """Store each distinct weight tensor once, in ``weights.bin``, and point both graphs at it.

    The exporter embeds the weights in each graph, so an export was twice the model. External data
    is ONNX's own mechanism (a location, an offset and a length per tensor); identical tensors of
    the two graphs share one range of the file.
    """
    import hashlib

    import onnx
    from onnx.external_data_helper import set_external_data

    models = {name: onnx.load(str(path)) for name, path in paths.items()}
    out = next(iter(paths.values())).parent / WEIGHTS_FILE
    seen: dict[str, tuple[int, int]] = {}
    with open(out, "wb") as fh:
        for model in models.values():
            for tensor in model.graph.initializer:
                raw = tensor.raw_data
                if len(raw) < INLINE_BYTES:
                    continue
                key = hashlib.sha1(raw + bytes(str((tensor.data_type, list(tensor.dims))), "ascii")).hexdigest()  # fmt: skip
                if key not in seen:
                    seen[key] = (fh.tell(), len(raw))
                    fh.write(raw)
                offset, length = seen[key]
                set_external_data(tensor, WEIGHTS_FILE, offset=offset, length=length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
    for name, model in models.items():
        onnx.save(model, str(paths[name]))


def reference_decode(model: nn.Module, tokens: Tensor, positions: Tensor, past_keys: Tensor,
                     past_values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The decode graph run in torch (tests compare onnxruntime against it)."""
    with torch.no_grad():
        return Decode(model.eval())(tokens, positions, past_keys, past_values, mask)


__all__ = [
    "DECODE_FILE", "PREFILL_FILE", "Decode", "Prefill", "check_exportable", "export_graphs",
    "quantize_int8", "reference_decode",
]  # fmt: skip


def export_onnx(source, out, quantize: str | None = None) -> Path:
    """``aurl export SOURCE --format onnx [--quantize int8] --out OUT``: the graphs of the model in
    ``SOURCE`` (a run or a model directory) plus its config and tokenizer, so ``load_bundle(OUT)``
    runs it with onnxruntime."""
    import dataclasses

    from aurl.bundle import CARD_FILE, CONFIG_FILE, load_bundle
    from aurl.config import atomic_write_text, save_config

    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize {quantize!r}: only int8 is supported")
    bundle = load_bundle(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = export_graphs(bundle.model, out)
    if quantize:
        quantize_int8(paths)
    share_weights(paths)
    cfg = bundle.config
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=bundle.tokenizer.vocab_size))  # fmt: skip
    save_config(cfg, out / CONFIG_FILE)
    bundle.tokenizer.save(out)
    size = sum(p.stat().st_size for p in [*paths.values(), out / WEIGHTS_FILE])
    atomic_write_text(out / CARD_FILE, (
        f"# {cfg.name} (ONNX{', INT8 dynamic' if quantize else ', fp32'})\n\n"
        f"- exported from: {source}\n- graphs: {PREFILL_FILE} (full context), {DECODE_FILE} "
        f"(one step, KV cache as inputs), {WEIGHTS_FILE} (their shared weights)\n"
        f"- size: {size / 1e6:.1f} MB\n\n"
        "Run with `aurl generate --model THIS_DIR`, `aurl evaluate THIS_DIR --data D`, "
        "`aurl serve --model THIS_DIR` (onnxruntime).\n"
    ))  # fmt: skip
    log.info("ONNX export written: %s (%.1f MB)", out, size / 1e6)
    return out
