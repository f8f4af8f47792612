"""SASRec's sequence encoder: a pre-LN transformer with learned positions (nanoGPT-style block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_rec.encoders.sequence import SequenceEncoder


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
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if last:
            q, allowed = q[:, :, -1:], allowed[:, :, -1:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, q.shape[2], d))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float, ffn_mult: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last: bool = False) -> torch.Tensor:
        attended = self.attn(self.norm1(x), allowed, last)
        x = (x[:, -1:] if last else x) + self.drop(attended)
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
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the encoder's max_len={self.max_len}")
        pos = torch.arange(length - 1, -1, -1, device=x.device)
        x = self.input_drop(x * (self.dim**0.5) + self.positions(pos))
        allowed = attention_mask(padding, self.causal)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, last=last and i == len(self.blocks) - 1)
        return self.norm(x)

    def last_state(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The final block attends from the last position alone and runs its feed-forward there
        only: the lower blocks still need every position (the last one attends to them)."""
        return self(x, padding, last=True)
