"""The learned user simulator as the environment of meta-learning tasks.

A segment task's environment is the simulator restricted to that segment's users; a cold-start
task's is its own user, whose episode starts right after the k known events. Training tasks only
ever run in the checkpoint's "train" simulator and test tasks in its "eval" one, whose response
model was fit on other users with another seed (see SimulatorTraining). With an EnvironmentFamily, a
segment task is also one of the family's populations: its episodes follow that environment's
session dynamics, in either simulator.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch

from lightning_rec.distributed import inverse_cdf, keyed_uniform
from lightning_rec.meta.family import EnvironmentFamily
from lightning_rec.meta.task_batch import TaskBatch
from lightning_rec.rl.agents import HistoryAgent
from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.rollout import Episodes, rollout
from lightning_rec.rl.simulator import UserSimulator
from lightning_rec.rl.simulator_artifact import load_simulators


def by_task(values: torch.Tensor, tasks: int) -> torch.Tensor:
    """[T, U, ...] view of a tensor of episodes [T * U, ...] played task after task."""
    return values.view(tasks, -1, *values.shape[1:])


class TaskEnvironment:
    """Episodes of a batch of tasks in the simulator `checkpoint` (a SimulatorTraining checkpoint).

    `episodes` users are drawn (with replacement) from each segment task's users within the
    simulator; a cold-start task plays its own user once (tasks whose user the simulator does
    not simulate are skipped by `task_rows`). Episodes are the RL toolkit's (`rl.rollout`), under
    its rules: consumed and already shown items are masked; slates are the top `slate_size` items
    when evaluating, drawn without replacement from the softmax at `temperature` when exploring
    for the policy-gradient inner loss.

    With a `family`, meta-training's segment tasks are each played in one of its train environments
    (drawn per task) and the meta-test's in each held-out one in turn; tasks without one (cold-start
    tasks) keep `behaviour`.
    """

    def __init__(
        self,
        checkpoint: str,
        behaviour: UserBehaviour | None = None,
        slate_size: int = 10,
        episodes: int = 16,
        temperature: float = 1.0,
        discount: float = 0.9,
        seed: int = 0,
        family: EnvironmentFamily | None = None,
    ):
        self.checkpoint, self.behaviour = checkpoint, behaviour if behaviour is not None else UserBehaviour()
        self.family = family
        self.slate_size, self.episodes, self.temperature, self.discount, self.seed = (
            slate_size,
            episodes,
            temperature,
            discount,
            seed,
        )
        self.simulators: dict[str, UserSimulator] = {}

    def attach(
        self,
        data,
        train_end: torch.Tensor,
        assignment: torch.Tensor,
        excluded: torch.Tensor,
        categories: torch.Tensor | None = None,
    ) -> None:
        """Build the "train" and "eval" simulators over the data the tasks come from (and its item
        `categories`, for a quit rule). Segment tasks draw their players from the segment's simulated
        users except `excluded` (the cold-start evaluation users, who must stay unseen)."""
        if categories is None and self.family is not None:
            for name, behaviour in zip(self.family.names, self.family.behaviours):
                if behaviour.reads_categories:
                    raise ValueError(
                        f"the family's environment {name!r} reads item categories (quit rule, variety or "
                        "category_reward): set data.init_args.category"
                    )
        self.simulators = load_simulators(
            self.checkpoint, data, train_end, self.behaviour, self.seed, categories=categories
        )
        self.members: dict[str, torch.Tensor] = {}
        for name, simulator in self.simulators.items():
            users = simulator.users.cpu()
            users = users[~torch.isin(users, excluded) & (assignment[users] >= 0)]
            self.members[name] = users
        self.assignment = assignment
        self.generator = torch.Generator().manual_seed(self.seed)

    def random_generators(self) -> dict[str, torch.Generator]:
        """The exploring episodes' generator and each simulator's (empty before `attach`)."""
        if not hasattr(self, "generator"):
            return {}
        simulators = {f"simulator/{name}": simulator.generator for name, simulator in self.simulators.items()}
        return {"episodes": self.generator, **simulators}

    def in_training_environments(self, tasks: TaskBatch) -> TaskBatch:
        """Segment `tasks`, each in a train environment of the family drawn by the episodes' generator
        (unchanged without a family)."""
        if self.family is None or (tasks.segment < 0).any():
            return tasks
        return dataclasses.replace(tasks, environment=self.family.draw_train(len(tasks), self.generator))

    def in_held_out_environments(self, tasks: TaskBatch) -> list[TaskBatch]:
        """Segment `tasks` once in each held-out environment of the family, named after it ([tasks]
        without a family)."""
        if self.family is None or (tasks.segment < 0).any():
            return [tasks]
        return [
            dataclasses.replace(
                tasks,
                environment=torch.full_like(tasks.segment, index),
                name=f"{tasks.name}/{self.family.names[index]}",
            )
            for index in self.family.held_out
        ]

    def groups(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """The rows of `tasks` in each environment they play in (one group when they share one)."""
        return [torch.nonzero(tasks.environment == value).squeeze(1) for value in tasks.environment.unique()]

    def simulator(self, name: str, environment: int) -> UserSimulator:
        """The simulator of role `name` under family environment `environment` (-1: `behaviour`): the
        same response model, users and dice, another session dynamics."""
        simulator = self.simulators[name]
        if environment < 0:
            return simulator
        played = copy.copy(simulator)
        played.behaviour = self.family.behaviours[environment]
        return played

    def task_rows(self, name: str, tasks: TaskBatch) -> torch.Tensor:
        """Which tasks can be played by the simulator of role `name` [T] bool: segment tasks with at least one
        member there, cold-start tasks whose user is simulated there."""
        allowed = self.simulators[name].allowed.cpu()
        has_members = torch.zeros(int(self.assignment.max()) + 2, dtype=torch.bool)
        has_members[self.assignment[self.members[name]] + 1] = True  # index 0: the -1 "no segment"
        return torch.where(tasks.user >= 0, allowed[tasks.user.clamp(min=0)], has_members[tasks.segment + 1])

    def _players(
        self, name: str, tasks: TaskBatch, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Users [T, U] to play each task and where their episodes start (None: after training). A
        segment's players are drawn by `generator`, or (None) from keyed dice of (seed, segment, player)."""
        if (tasks.user >= 0).all():
            return tasks.user.unsqueeze(1), tasks.start.unsqueeze(1)
        if (tasks.segment < 0).any():
            raise ValueError("a task batch mixes cold-start and segment tasks")
        if not self.task_rows(name, tasks).all():
            raise ValueError(f"some segments of {tasks.name!r} have no users in the {name!r} simulator")
        members = self.members[name]
        weights = (self.assignment[members].unsqueeze(0) == tasks.segment.unsqueeze(1)).float()  # [T, members]
        if generator is not None:
            return members[torch.multinomial(weights, self.episodes, replacement=True, generator=generator)], None
        uniform = keyed_uniform(self.seed, tasks.segment.unsqueeze(1), torch.arange(self.episodes))  # [T, U]
        return members[inverse_cdf(weights, uniform)], None

    def play(self, name: str, tasks: TaskBatch, act: Callable[[torch.Tensor], torch.Tensor], explore: bool) -> Episodes:
        """Run one episode per player, task after task (rows [T * U]; `by_task` views them [T, U]);
        `act(histories [T, U, H]) -> scores [T, U, N + 1]`.

        Greedy (evaluation) episodes play on keyed dice: a task's players and clicks are a function of
        the seed, the task and the player's index, so two policies, or one policy before and after
        adaptation, meet the same users and the same dice, whatever other tasks share the batch (and
        so however many processes share the test). Exploring episodes draw fresh ones. The tasks share
        one environment (`groups` splits a batch)."""
        environments = tasks.environment.unique()
        if len(environments) > 1:
            raise ValueError("play() runs tasks of one environment at a time: split the batch by groups()")
        simulator = self.simulator(name, int(environments[0]))
        generator = self.generator if explore else None
        users, starts = self._players(name, tasks, generator)
        t, u = users.shape
        dice = None
        if not explore:
            simulator.seed(self.seed)
            task_key = torch.where(tasks.user >= 0, 2 * tasks.user, 2 * tasks.segment + 1)  # [T]: which task
            dice = (task_key.unsqueeze(1) * u + torch.arange(u)).flatten()
        agent = HistoryAgent(lambda histories: act(histories.view(t, u, -1)).flatten(0, 1), self.temperature)
        positions = None if starts is None else starts.flatten()
        return rollout(simulator, agent, users.flatten(), positions, self.slate_size, explore, generator, dice)
