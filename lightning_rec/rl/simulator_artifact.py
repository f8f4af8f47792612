"""A trained user simulator as an artifact: what the simulation stage writes into its checkpoint and
what later stages read back as UserSimulators, without the stage that trained it.

A checkpoint holds one response model per role, "train" (the simulator policies are trained in)
and "eval" (the one they are judged in, fit on other users or events with another seed), the users
each role may simulate and the sizes of the data both were fit on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_rec.checkpoints import read_checkpoint
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import SequenceData
from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.response_model import ResponseModel
from lightning_rec.rl.simulator import UserSimulator

SIMULATOR_ROLES = ("train", "eval")
CHECKPOINT_KEY = "user_simulators"


def simulator_entry(response_models: Sequence[ResponseModel], users: Sequence[torch.Tensor], sizes: dict) -> dict:
    """The checkpoint entry of the response models and simulated users of each role (in
    SIMULATOR_ROLES order), whose weights are the checkpoint's state_dict entries under
    `response_models.<index>.`, and the data `sizes` (num_users, num_items, rating_range,
    mean_rating, history_len)."""
    return {
        "sizes": dict(sizes),
        "roles": {
            role: {
                "response_model": {"dim": model.dim, "dropout": model.dropout, "init_std": model.init_std},
                "weights": f"response_models.{index}.",
                "users": role_users.cpu(),
            }
            for index, (role, model, role_users) in enumerate(zip(SIMULATOR_ROLES, response_models, users))
        },
    }


def check_sizes(sizes: dict, data: SequenceData, path: str) -> None:
    """Refuse `data` other than the data the simulator was fit on (its users and items)."""
    if data.num_users != sizes["num_users"] or data.num_items != sizes["num_items"]:
        raise DataError(
            f"{path}: the simulator was fit on {sizes['num_users']} users x {sizes['num_items']} items, "
            f"the data has {data.num_users} x {data.num_items}: use the same data configuration"
        )


def _entry(path: str) -> tuple[dict, dict]:
    """(the simulator entry, the state dict) of the checkpoint at `path`."""
    checkpoint = read_checkpoint(path)
    if CHECKPOINT_KEY not in checkpoint:
        raise DataError(f"{path} holds no trained user simulator (write one with the SimulatorTraining stage)")
    return checkpoint[CHECKPOINT_KEY], checkpoint["state_dict"]


def simulated_users(path: str) -> dict[str, torch.Tensor]:
    """{role: the users its simulator may simulate} of the simulation checkpoint at `path`."""
    return {role: saved["users"] for role, saved in _entry(path)[0]["roles"].items()}


def load_simulators(
    path: str,
    data: SequenceData,
    train_end: torch.Tensor,
    behaviour: UserBehaviour,
    seed: int = 0,
    device: torch.device | str = "cpu",
    categories: torch.Tensor | None = None,
) -> dict[str, UserSimulator]:
    """{"train": UserSimulator, "eval": UserSimulator} of the simulation checkpoint at `path`, over
    `data` (the data it was fit on) with episodes starting after `train_end`, and the items'
    `categories` (the data module's `catalog.categories`, for a behaviour's quit rule). The global random state
    is left as it was. Checkpoints named in one's own configuration are trusted (weights_only=False:
    they hold configuration objects)."""
    entry, state = _entry(path)
    sizes = entry["sizes"]
    check_sizes(sizes, data, path)
    simulators = {}
    for role, saved in entry["roles"].items():
        model = ResponseModel(**saved["response_model"])
        with torch.random.fork_rng(devices=[]):  # build() initialises weights the state dict then replaces
            model.build(sizes["num_items"], sizes["rating_range"], sizes["mean_rating"])
        prefix = saved["weights"]
        model.load_state_dict({key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)})
        simulators[role] = UserSimulator(
            model.to(device), behaviour, data, train_end, saved["users"], sizes["history_len"], seed, categories
        )
    return simulators
