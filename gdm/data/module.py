"""The data of one training cell for Lightning: resident images (default) or a shard stream.

In-memory (trainer.in_memory): the cell's n training images are loaded once and kept on the device
(loaded straight onto the trainer's device, in blocks: no host copy of the split on a GPU rank; the module takes
them with `release_images`, after which this data module holds no reference to them);
the training dataloader yields only step ticks and `gdm.training.lit_module.DenoiserModule` draws each batch from
the resident tensor with a generator seeded by (cell, step, rank) — no worker processes, no host→
device copies, and a resumed run sees exactly the batches of an uninterrupted one.
Streaming (in_memory=False): batches of the split come from `gdm.data.streaming.make_stream`
(webdataset, DDP-correct); a resumed run restarts the stream, so it is not bitwise reproducible.
Validation uses fixed batches: the first images of the training split and of the test set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class StepTicks(IterableDataset):
    """An endless stream of empty ticks: one per optimisation step (the batch is drawn in training_step)."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield torch.zeros(())


class CellDataModule(L.LightningDataModule):
    """Training images (resident or streamed) and fixed validation batches of one cell.

    data_dir: the prepared dataset (gdm.data.prepare); split "A"/"B", n images. images / test_images:
    tensors [N, 1, H, W] in [0, 1] given directly instead of data_dir (tests, benchmarks).
    batch_size: images per step on this rank. val_images: images in each validation batch.
    """

    def __init__(self, data_dir: Path | None, split: str, n: int, *, batch_size: int, in_memory: bool = True,
                 seed: int = 0, epoch_size: int = 1000, num_workers: int = 0, val_images: int = 64,
                 images: torch.Tensor | None = None, test_images: torch.Tensor | None = None):
        super().__init__()
        if data_dir is None and images is None:
            raise ValueError("CellDataModule needs data_dir (a prepared dataset) or images (a tensor)")
        self.data_dir, self.split, self.n = data_dir, split, n
        self.batch_size, self.in_memory, self.seed = batch_size, in_memory, seed
        self.epoch_size, self.num_workers, self.val_images = epoch_size, num_workers, val_images
        self.images, self.test_images = images, test_images
        self.train_head: torch.Tensor | None = None  # validation's training images: a copy of their own

    def setup(self, stage: str | None = None) -> None:
        if self.images is None and self.in_memory:
            self.images = self._load(self.split, self.n, self.target_device())
        if self.test_images is None and self.data_dir is not None:
            self.test_images = self._load("test", self.val_images)

    def target_device(self) -> torch.device | None:
        """The device of this rank's trainer (its GPU), where the resident images go; None without a trainer."""
        return None if self.trainer is None else self.trainer.strategy.root_device

    def _load(self, split: str, n: int | None, device: torch.device | None = None) -> torch.Tensor:
        from gdm.data.store import load_split  # the data layer's reader (verifies shards on first use)

        if self.data_dir is None:  # images given as a tensor were handed over by release_images
            raise ValueError("this CellDataModule's images were released to a module; make a new CellDataModule")

        return load_split(Path(self.data_dir), split, n, device)

    def release_images(self) -> torch.Tensor | None:
        """Hand over the resident training images and forget them, so that once the caller holds them on its
        device no host copy stays alive here; validation keeps its own copy of the first val_images."""
        if self.images is not None:
            self._train_head()
        images, self.images = self.images, None
        return images

    def train_dataloader(self) -> DataLoader:
        if self.in_memory:
            return DataLoader(StepTicks(), batch_size=None)
        return DataLoader(self._stream(), batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _stream(self):
        try:
            from gdm.data.streaming import make_stream
        except ImportError as err:  # webdataset missing
            raise RuntimeError(f"trainer.in_memory=False needs gdm.data.streaming ({err}); "
                               "install webdataset or set trainer.in_memory=true") from err
        return make_stream(Path(self.data_dir), self.split, self.n, self.batch_size, self.seed, self.epoch_size,
                           num_workers=self.num_workers)

    def val_batches(self) -> dict[str, torch.Tensor]:
        """{"train": first training images, "test": first test images} (CPU tensors, fixed)."""
        batches = {"train": self._train_head()}
        if self.test_images is not None:
            batches["test"] = self.test_images[: self.val_images]
        return batches

    def _train_head(self) -> torch.Tensor:
        """The first val_images training images on the host, copied: a view would keep the whole split alive."""
        if self.train_head is None and self.images is not None:
            self.train_head = self.images[: self.val_images].to("cpu", copy=True)
        elif self.train_head is None:
            # streaming: splits are nested (A_m ⊂ A_n, B_m ⊂ B_n), so the m-image split is a training subset
            self.train_head = self._load(self.split, min(self.n, self.val_images))
        return self.train_head
