"""Datasets, preprocessing, splits and the SequenceDataModule shared by every stage."""

from lightning_rec.data.categories import CategoryField
from lightning_rec.data.datamodule import ItemCatalog, SequenceDataModule

__all__ = ["CategoryField", "ItemCatalog", "SequenceDataModule"]
