"""A single simulated user as a `gymnasium.Env`, for agents written against the Gym API."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from lightning_rec.rl.simulator import UserSimulator


class SimulatedUserEnv(gym.Env):
    """One user of a UserSimulator at a time.

    Observation: {"history": the user's last H consumed item ids (0 = padding, newest last),
    "patience": the patience left}. Action: a slate of `slate_size` item ids (0 = empty position).
    Reward: the simulator's (click satisfaction). `terminated` when the user leaves out of
    impatience, `truncated` at the simulator's max_steps. `info["clicks"]` marks the clicked
    position. `reset(options={"user": u})` picks the user, else one of the environment's users at
    random; `reset(seed=...)` also seeds the simulated clicks.
    """

    metadata = {"render_modes": []}

    def __init__(self, simulator: UserSimulator, slate_size: int = 10):
        super().__init__()
        self.simulator, self.slate_size = simulator, slate_size
        n = simulator.num_items
        self.observation_space = gym.spaces.Dict(
            {
                "history": gym.spaces.Box(0, n, (simulator.history_len,), dtype=np.int64),
                "patience": gym.spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32),
            }
        )
        self.action_space = gym.spaces.MultiDiscrete(np.full(slate_size, n + 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.simulator.seed(seed)
        users = self.simulator.users
        user = (options or {}).get("user")
        if user is None:
            user = int(users[self.np_random.integers(len(users))])
        self.simulator.reset(torch.tensor([user], device=self.simulator.device))
        return self._observation(), {"user": user}

    def step(self, action):
        slate = torch.as_tensor(np.asarray(action, dtype=np.int64), device=self.simulator.device).reshape(1, -1)
        clicks, reward, done = self.simulator.step(slate)
        state = self.simulator.state
        terminated = bool(state.left[0])
        truncated = bool(done[0]) and not terminated
        return self._observation(), float(reward[0]), terminated, truncated, {"clicks": clicks[0].cpu().numpy()}

    def _observation(self) -> dict[str, np.ndarray]:
        state = self.simulator.state
        return {
            "history": state.history[0].cpu().numpy().astype(np.int64),
            "patience": state.patience[:1].cpu().numpy().astype(np.float32),
        }
