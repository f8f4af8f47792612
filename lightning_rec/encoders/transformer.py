"""SASRec's sequence encoder: a pre-LN transformer with learned positions (nanoGPT-style block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_rec.encoders.sequence import IncrementalStates, SequenceEncoder


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Attention output at every position, or (`last`) at the last one only [B, 1, D]."""
        q, k, v = self.heads(x)
        if last:
            q, allowed = q[:, :, -1:], allowed[:, :, -1:]
        return self.attend(q, k, v, allowed)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Queries, keys and values [3, B, heads, L, D / heads] of x [B, L, D]."""
        b, length, d = x.shape
        return self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The output [B, Q, D] of queries q [B, heads, Q, D / heads] over keys and values k, v."""
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        b, _, queries, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, queries, -1))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float, ffn_mult: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last: bool = False) -> torch.Tensor:
        attended = self.attn(self.norm1(x), allowed, last)
        return self.finish(x[:, -1:] if last else x, attended)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output at inputs x [B, Q, D] given their attention output: both residuals."""
        x = x + self.drop(attended)
        return x + self.drop(self.ffn(self.norm2(x)))


def attention_mask(padding: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean [B, 1, L, L] mask of allowed attention. Padding keys are hidden, but every position may
    always see itself: a padding query would otherwise have no key at all, and softmax over nothing
    is NaN, which then spreads through the batch."""
    length = padding.shape[1]
    allowed = ~padding[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()
    return allowed | torch.eye(length, dtype=torch.bool, device=padding.device)


class TransformerEncoder(SequenceEncoder):
    """Stack of pre-LN transformer blocks over item vectors plus learned positions.

    causal=True is SASRec; causal=False is the bidirectional encoder of BERT4Rec. Positions are
    counted from the right end, so the most recent item always has the same position embedding
    whatever the amount of left padding.
    """

    def __init__(
        self,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        max_len: int = 200,
        dropout: float = 0.2,
        causal: bool = True,
    ):
        super().__init__()
        self.dim, self.causal, self.max_len = dim, causal, max_len
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.input_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, last: bool = False) -> torch.Tensor:
        x = self.embed(x)
        allowed = attention_mask(padding, self.causal)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, last=last and i == len(self.blocks) - 1)
        return self.norm(x)

    def embed(self, x: torch.Tensor, from_right: torch.Tensor | None = None) -> torch.Tensor:
        """The first block's input: item vectors x [B, L, D], scaled, plus the embeddings of their
        positions counted from the right (`from_right` [B, L]; default: the rows' own L - 1, ..., 0)."""
        if from_right is None:
            length = x.shape[1]
            if length > self.max_len:
                raise ValueError(f"sequence length {length} exceeds the encoder's max_len={self.max_len}")
            from_right = torch.arange(length - 1, -1, -1, device=x.device)
        return self.input_drop(x * (self.dim**0.5) + self.positions(from_right))

    def last_state(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The final block attends from the last position alone and runs its feed-forward there
        only: the lower blocks still need every position (the last one attends to them)."""
        return self(x, padding, last=True)

    def incremental(self, x: torch.Tensor, padding: torch.Tensor, position: torch.Tensor) -> IncrementalStates:
        return CachedStates(self, x, padding, position)

    def top_layer_prefixes(self, n: int) -> list[str]:
        """The top `n` blocks and the final norm."""
        if not 1 <= n <= len(self.blocks):
            raise ValueError(f"the top {n} layers asked of a transformer with {len(self.blocks)} blocks")
        return [f"blocks.{i}." for i in range(len(self.blocks) - n, len(self.blocks))] + ["norm."]


class CachedStates(IncrementalStates):
    """The keys and values of every filled position are kept, so appending encodes one new input
    per row instead of the whole row: the same numbers as `forward` (the tests check)."""

    encoder: TransformerEncoder

    def start(self, x: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        x = encoder.embed(x)
        allowed = attention_mask(~self.filled, causal=True)
        self.keys, self.values = [], []
        for block in encoder.blocks:
            q, k, v = block.attn.heads(block.norm1(x))
            self.keys.append(k)
            self.values.append(v)
            x = block.finish(x, block.attn.attend(q, k, v, allowed))
        return encoder.norm(x)[torch.arange(len(x), device=x.device), self.position]

    def advance(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        encoder, position, length = self.encoder, self.position[rows], self.filled.shape[1]
        x = encoder.embed(x.unsqueeze(1), (length - 1 - position).unsqueeze(1))
        keys = torch.arange(length, device=position.device)
        allowed = (self.filled[rows] & (keys <= position.unsqueeze(1)))[:, None, None, :]
        for layer, block in enumerate(encoder.blocks):
            q, k, v = block.attn.heads(block.norm1(x))
            self.keys[layer][rows, :, position] = k[:, :, 0]
            self.values[layer][rows, :, position] = v[:, :, 0]
            attended = block.attn.attend(q, self.keys[layer][rows], self.values[layer][rows], allowed)
            x = block.finish(x, attended)
        return encoder.norm(x)[:, 0]
