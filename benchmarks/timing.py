"""Shared by the training-speed benchmarks: wall time of every training batch under a real Trainer."""

from __future__ import annotations

import time

import lightning as L


class Timer(L.Callback):
    """Seconds of each training step (batch start to batch end), in order."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self.start)
