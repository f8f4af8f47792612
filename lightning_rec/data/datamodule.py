"""SequenceDataModule: one per dataset, shared by every stage (pretraining, simulation, RL, meta)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

from lightning_rec.data.categories import CategoryField, category_ids
from lightning_rec.data.datasets import UserDataset, WindowDataset, keep_batch, training_windows
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import PreprocessOptions, SequenceData, load_or_build
from lightning_rec.data.sources import DataSource, MovieLensLatestSmall
from lightning_rec.data.splits import (
    Split,
    TrainingSequences,
    draw_cold_items,
    leave_one_out,
    temporal_split,
    training_sequences,
)
from lightning_rec.distributed import Shards
from lightning_rec.resume import ShuffledLoader, derived_seed, resume_position


@dataclasses.dataclass
class ItemCatalog:
    """What item encoders and baselines need to know about the items."""

    num_items: int
    info: object  # pandas DataFrame, row i-1 describes item i (columns: item, title, text columns)
    popularity: torch.Tensor  # FloatTensor[num_items + 1]: training-event count of each item (0 for padding)
    categories: torch.Tensor | None = None  # LongTensor[num_items + 1]: category id of each item, 0 = none
    category_names: list[str] | None = None  # name of category id c is category_names[c - 1]


class SequenceDataModule(L.LightningDataModule):
    """Users' chronological item sequences with a leave-one-out or global temporal split.

    Training batches are windows over the whole training history (every event is a target once);
    evaluation batches hold each user's last `max_len` events, all history items (to mask them from
    the ranking) and the target. `category` names the item column whose values are the items'
    categories (`catalog.categories`), e.g. `{column: genres, pick: first}`.
    """

    def __init__(
        self,
        source: DataSource | None = None,
        max_len: int = 200,
        split: Literal["leave_one_out", "temporal"] = "leave_one_out",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_rating: float | None = None,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        deduplicate: bool = False,
        max_history: int | None = None,
        items_without_events: bool = False,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        cache_dir: str | None = "~/.cache/lightning_rec",
        predict_users: list[str] | None = None,
        cold_item_fraction: float = 0.0,
        cold_item_seed: int = 0,
        category: CategoryField | None = None,
    ):
        super().__init__()
        # Evaluation rows are split over the processes without repeats (distributed.Shards), so with
        # fewer rows than processes some get none; the stages gather their results over all of them.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        self.save_hyperparameters(ignore=["source"])
        self.source = source if source is not None else MovieLensLatestSmall()
        self.category = category  # kept as given: the CLI's hparams hold the YAML's plain mapping
        self.options = PreprocessOptions(
            min_rating, min_user_interactions, min_item_interactions, deduplicate, max_history, items_without_events
        )
        self.data: SequenceData | None = None
        self.split: Split | None = None
        self.cold_items: torch.Tensor | None = None  # BoolTensor[num_items + 1]: withheld from training

    # -- Lightning hooks -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        load_or_build(self.source, self.options, self.hparams.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = load_or_build(self.source, self.options, self.hparams.cache_dir)
        if self.hparams.split == "leave_one_out":
            self.split = leave_one_out(self.data)
        else:
            self.split = temporal_split(self.data, self.hparams.val_fraction, self.hparams.test_fraction)
        self.cold_items = draw_cold_items(
            self.data.num_items, self.hparams.cold_item_fraction, self.hparams.cold_item_seed
        )
        if len(self.split.test_users) == 0:
            raise DataError("no user can be evaluated: leave-one-out needs users with at least 3 interactions")

    def train_dataloader(self) -> DataLoader:
        windows = training_windows(self.training_sequences(), self.hparams.max_len)
        return self._loader(WindowDataset(windows), self._train_batch_size(), shuffle=True)

    def _train_batch_size(self) -> int:
        """`batch_size`, unless the stage being trained asks for its own (`train_batch_size`, as the
        RL stages do for the users of an update), so one data file serves every stage."""
        stage = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(stage, "train_batch_size", None) or self.hparams.batch_size

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            UserDataset(self.data, self.split.val_users, self.split.val_positions, self.hparams.max_len)
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            UserDataset(self.data, self.split.test_users, self.split.test_positions, self.hparams.max_len)
        )

    def predict_dataloader(self) -> DataLoader:
        stage = self.trainer.lightning_module if self.trainer is not None else None
        if stage is not None and is_overridden("predict_dataloader", stage):
            return stage.predict_dataloader()  # a stage that predicts over items (text encoding) brings its rows
        users = self.predict_user_indices()
        positions = self.data.lengths[users]
        return self._loader(UserDataset(self.data, users, positions, self.hparams.max_len, with_target=False))

    # -- what later stages use -------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        self.setup()
        return self.data.num_items

    @property
    def catalog(self) -> ItemCatalog:
        self.setup()
        categories, names = self.item_categories() if self.category is not None else (None, None)
        return ItemCatalog(self.data.num_items, self.data.item_info, self.train_item_counts(), categories, names)

    def item_categories(self, field: CategoryField | None = None) -> tuple[torch.Tensor, list[str]]:
        """Category ids [N + 1] (0 = none) and names from `field`, by default the `category` option."""
        self.setup()
        field = field if field is not None else self.category
        if field is None:
            raise DataError("no category field: set the data module's `category` (e.g. {column: genres, pick: first})")
        return category_ids(self.data.item_info, field)

    def train_item_counts(self) -> torch.Tensor:
        """How often each item occurs in the training part of the sequences (popularity; 0 for cold items)."""
        data, train_end, _ = self.training_sequences()
        user_of_event = torch.repeat_interleave(torch.arange(data.num_users), data.lengths)
        position = torch.arange(len(data.items)) - data.offsets[user_of_event]
        in_train = position < train_end[user_of_event]
        return torch.bincount(data.items[in_train], minlength=data.num_items + 1).float()

    def training_sequences(self) -> TrainingSequences:
        """The sequences, per-user training ends and event positions that training sees (every stage's
        training batches): without the cold items' events when `cold_item_fraction` > 0 (a seeded
        random share of items, never trained on)."""
        self.setup()
        return training_sequences(self.data, self.split.train_end, self.cold_items)

    def user_index(self, user_id) -> int | None:
        """Index of an original user id (as given in the data, or its string form); None if unknown."""
        self.setup()
        if not hasattr(self, "_user_lookup"):
            self._user_lookup = {str(u): i for i, u in enumerate(self.data.user_ids)}
        return self._user_lookup.get(str(user_id))

    def predict_user_indices(self) -> torch.Tensor:
        """Users to recommend for: `predict_users` (original ids) or everyone. Unknown ids are an error
        that names them, since silently dropping them would hide a data mismatch."""
        self.setup()
        if self.hparams.predict_users is None:
            return torch.arange(self.data.num_users)
        indices = [self.user_index(u) for u in self.hparams.predict_users]
        unknown = [u for u, i in zip(self.hparams.predict_users, indices) if i is None]
        if unknown:
            raise DataError(f"predict_users: unknown user ids {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        return torch.as_tensor(indices, dtype=torch.long)

    def _loader(self, dataset, batch_size: int | None = None, shuffle: bool = False, stream: int = 0) -> DataLoader:
        # Evaluation under DDP: each user exactly once (Lightning's default sampler would repeat some
        # users to even out the shards, biasing the metrics).
        # Training batches come from a ShuffledLoader: a function of (seed, stream, epoch, batch), so a
        # run resumed from a checkpoint goes on with the batches the uninterrupted run would have seen.
        options = {
            "batch_size": batch_size or self.hparams.eval_batch_size,
            "collate_fn": keep_batch,
            "num_workers": self.hparams.num_workers,
            "persistent_workers": self.hparams.num_workers > 0,
        }
        if shuffle:
            epoch, skip = resume_position(self.trainer)
            seed = derived_seed(torch.initial_seed(), stream)  # one stream of randomness per training loader
            return ShuffledLoader(dataset, seed=seed, epoch=epoch, skip=skip, **options)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        sampler = Shards(dataset) if distributed else None
        return DataLoader(dataset, sampler=sampler, **options)
