"""Item encoders (item -> vector) and sequence encoders (item vectors -> user state)."""

from lightning_rec.encoders.item import IDItemEncoder, ItemEncoder
from lightning_rec.encoders.sequence import SequenceEncoder
from lightning_rec.encoders.transformer import TransformerEncoder

__all__ = ["IDItemEncoder", "ItemEncoder", "SequenceEncoder", "TransformerEncoder"]
