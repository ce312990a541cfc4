"""A per-row KV cache and one batched decode step over it (continuous batching).

Shape legend
  L  layers        B  rows (requests)       H  heads        D  head width
  S  key slots     S_max  slots per row      C  model width   V  vocabulary

:class:`aurl.models.blocks.KVCache` keeps one length and one position for all rows, which is what
sampling a batch of pieces together needs. A server decoding concurrent requests needs rows that
start and end at different times: here every row has its own ``length`` (valid slots) and
``offset`` (absolute position of slot 0), a new row is written into a free row from a one-row
prefill, and a finished row is simply cleared. :func:`row_step` runs the network for one new token
per row, each at its own absolute position (rotary angles per row), attending only to that row's
valid slots. It reuses the model's own modules (embeddings, norms, projections, MLP), so the weights
and the arithmetic are the same as :meth:`MusicTransformer.forward`; only the cache bookkeeping and
the attention mask differ. Keys are stored after rotation, as in ``KVCache``, so dropping a row's
oldest slots keeps exact relative attention (see ``KVCache``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aurl.models.blocks import Attention, FullAttention, KVCache, apply_rotary


class RowCache:
    """Preallocated keys/values (L, B, H, S_max, D) with a length and offset per row."""

    def __init__(
        self,
        n_layers: int,
        rows: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if rows <= 0 or max_len <= 0:
            raise ValueError(f"RowCache needs rows > 0 and max_len > 0, got {rows}, {max_len}")
        shape = (n_layers, rows, n_heads, max_len, head_dim)  # (L, B, H, S_max, D)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * rows
        self.offsets = [0] * rows

    @classmethod
    def for_model(cls, model: torch.nn.Module, rows: int, max_len: int | None = None) -> RowCache:
        """A cache shaped for ``model`` (a :class:`MusicTransformer`), on its device and dtype."""
        cfg, weight = model.cfg, model.tok_emb.weight
        return cls(
            cfg.n_layers, rows, cfg.n_heads, max_len or cfg.max_seq_len, cfg.d_model // cfg.n_heads,
            device=weight.device, dtype=weight.dtype,
        )  # fmt: skip

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    @property
    def rows(self) -> int:
        return self.keys.shape[1]

    def position(self, row: int) -> int:
        """Absolute position of the next token of ``row``."""
        return self.offsets[row] + self.lengths[row]

    def load(self, row: int, cache: KVCache) -> None:
        """Copy a one-row :class:`KVCache` (a prefill) into ``row``, replacing what it held."""
        if cache.batch_size != 1 or cache.length > self.max_len:
            raise ValueError(
                f"load needs a one-row cache of at most {self.max_len} slots, got "
                f"{cache.batch_size} rows x {cache.length}"
            )
        n = cache.length
        self.keys[:, row, :, :n] = cache.keys[:, 0, :, :n]
        self.values[:, row, :, :n] = cache.values[:, 0, :, :n]
        self.lengths[row], self.offsets[row] = n, cache.offset

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` (slots, length, offset) into row ``dst`` (compacting active rows)."""
        n = self.lengths[src]
        self.keys[:, dst, :, :n] = self.keys[:, src, :, :n]
        self.values[:, dst, :, :n] = self.values[:, src, :, :n]
        self.lengths[dst], self.offsets[dst] = n, self.offsets[src]

    def clear(self, row: int) -> None:
        """Free ``row`` (its slots are simply overwritten by the next request)."""
        self.lengths[row], self.offsets[row] = 0, 0

    def drop_oldest(self, row: int, n: int) -> None:
        """Forget the ``n`` oldest positions of ``row``; later positions keep their numbers."""
        length = self.lengths[row]
        if not 0 <= n <= length:
            raise ValueError(f"drop_oldest(n={n}) needs 0 <= n <= cached length {length}")
        keep = length - n
        # clone: source and destination slices overlap
        self.keys[:, row, :, :keep] = self.keys[:, row, :, n:length].clone()
        self.values[:, row, :, :keep] = self.values[:, row, :, n:length].clone()
        self.lengths[row], self.offsets[row] = keep, self.offsets[row] + n


def supports_rows(model: torch.nn.Module) -> bool:
    """True when :func:`row_step` can run ``model``: a causal MusicTransformer with full attention
    (sliding-window and hierarchical kinds need their own per-row masks; not built)."""
    blocks = getattr(model, "blocks", None)
    return bool(blocks) and all(
        type(b.attn.kind) is FullAttention and b.attn.causal for b in blocks
    )


def _attend(
    attn: Attention, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: RowCache, layer: int,
    rows: Tensor, slots: Tensor, key_mask: Tensor | None, n_keys: int,
) -> Tensor:  # fmt: skip
    """One new token per row: x (B, 1, C) -> (B, 1, C), writing k, v at each row's next slot."""
    B, T, C = x.shape
    qkv = attn.qkv(x).view(B, T, 3, attn.n_heads, attn.head_dim)  # (B, 1, 3, H, D)
    if rope is not None:
        cos, sin = (t[:, None, None, None, :] for t in rope)  # (B, 1, 1, 1, D)
        q, k = apply_rotary(qkv[:, :, :2], cos, sin).unbind(2)  # (B, 1, H, D) each
    else:
        q, k = qkv[:, :, 0], qkv[:, :, 1]
    v = qkv[:, :, 2]
    cache.keys[layer, rows, :, slots] = k[:, 0]  # (B, H, D) into each row's own slot
    cache.values[layer, rows, :, slots] = v[:, 0]
    keys = cache.keys[layer, :B, :, :n_keys]  # (B, H, S, D)
    values = cache.values[layer, :B, :, :n_keys]
    q = q.transpose(1, 2)  # (B, H, 1, D)
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask)  # (B, H, 1, D)
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


@torch.inference_mode()
def row_step(model: torch.nn.Module, tokens: Tensor, cache: RowCache) -> Tensor:
    """Feed one token to each of the first B rows, tokens (B,) long with B <= cache.rows; returns
    logits (B, V) float. Rows B.. are untouched (the scheduler keeps active rows at 0..B-1).

    Every fed row must have room for one more slot (call ``cache.drop_oldest`` first when full).
    With all fed rows at one length this is the same computation as
    :meth:`MusicTransformer.forward` with a ``KVCache`` (no mask).
    """
    if tokens.dim() != 1 or not 0 < tokens.shape[0] <= cache.rows:
        raise ValueError(
            f"tokens must be (B,) with 0 < B <= {cache.rows}, got {tuple(tokens.shape)}"
        )
    B = tokens.shape[0]
    lens = cache.lengths[:B]
    if any(n >= cache.max_len for n in lens):
        raise ValueError(f"a row of the cache is full ({cache.max_len} slots); drop_oldest first")
    device = cache.keys.device
    lengths = torch.tensor(lens, device=device)  # (B,)
    positions = lengths + torch.tensor(cache.offsets[:B], device=device)  # (B,)
    S = int(lengths.max()) + 1
    key_mask = None
    if len(set(lens)) > 1:
        key_mask = (torch.arange(S, device=device)[None, :] <= lengths[:, None])[:, None, None]
    x = model.tok_emb(tokens[:, None])  # (B, 1, C)
    if model.pos_emb is not None:
        x = x + model.pos_emb(positions)[:, None]  # (B, 1, C)
    rope = None
    if model.rotary is not None:
        top = int(positions.max()) + 1
        model.rotary(top)  # grows the tables when needed
        rope = (model.rotary.cos[positions], model.rotary.sin[positions])  # (B, D) each
    rows = torch.arange(B, device=device)
    for i, block in enumerate(model.blocks):
        x = x + _attend(block.attn, block.norm1(x), rope, cache, i, rows, lengths, key_mask, S)
        x = x + block.mlp(block.norm2(x))
    for b in range(B):
        cache.lengths[b] += 1
    return model.lm_head(model.norm(x))[:, 0].float()  # (B, V)
