"""Checkpoints that survive a resume into a new run folder: the best checkpoint travels with the run."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from transferlab.errors import UserError
from transferlab.utils.atomic import copy_atomically, link_atomically

log = logging.getLogger(__name__)

_DIRPATH_CHANGED = "The dirpath has changed from"


class ResumableModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that keeps its best checkpoints when a run resumes in a new folder.

    ``transferlab-train ckpt_path=.../last.ckpt`` resumes into a new run folder. Lightning's callback then
    forgets its best score and best checkpoints (it restores them only into the same folder), so the
    resumed run's ``best.ckpt`` would be the best since the resume while ``val/acc_best`` is the best
    overall, and the run would test the wrong checkpoint. This callback copies the earlier run's best
    checkpoints into its own folder (atomically, on global rank 0) and restores their scores, so later
    epochs must beat the overall best to replace them.

    The earlier run's checkpoints are looked for where they were written, then beside the resumed
    checkpoint (a moved run folder). A callback without ``monitor`` (``last.ckpt``) has nothing to carry
    over and starts afresh in the new folder.

    When another checkpoint callback of the run has just written a checkpoint at the same point of
    training (``best.ckpt`` of an epoch that is a new best, then ``last.ckpt``), the file is linked
    rather than written again, as Lightning's ``save_last="link"`` does: the two hold the same weights,
    optimizer and loop state, and one write of the model is saved every such epoch. The linked file
    differs only in the state of this callback, which it holds as of the save before.

    Takes the arguments of ``ModelCheckpoint``; its state key is ``ModelCheckpoint``'s, so checkpoints
    written by either resume into both.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resuming: L.Trainer | None = None
        self._saved_at: tuple[int, dict[str, Any]] | None = None  # training point of the last save

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        twin = self._saved_at_this_point(trainer)
        if twin is None:
            super()._save_checkpoint(trainer, filepath)
            self._saved_at = _training_point(trainer)
            return
        if trainer.is_global_zero:
            link_atomically(twin, filepath)
        trainer.strategy.barrier("ResumableModelCheckpoint._save_checkpoint")
        # What ModelCheckpoint._save_checkpoint does after writing.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        self._saved_at = _training_point(trainer)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _saved_at_this_point(self, trainer: L.Trainer) -> str | None:
        """A file another callback of this kind wrote at this very point of training, if any."""
        point = _training_point(trainer)
        for other in trainer.checkpoint_callbacks:
            if (
                other is not self
                and isinstance(other, ResumableModelCheckpoint)
                and other._saved_at == point
                and other.save_weights_only == self.save_weights_only
                and other._last_checkpoint_saved
                and Path(other._last_checkpoint_saved).is_file()
            ):
                return other._last_checkpoint_saved
        return None

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Called just before load_state_dict, which has no trainer of its own.
        self._resuming = trainer

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        trainer, self._resuming = self._resuming, None
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        with warnings.catch_warnings():  # handled below: Lightning only warns that it forgets them
            warnings.filterwarnings("ignore", message=_DIRPATH_CHANGED)
            super().load_state_dict(state_dict)
        # Only a resumed fit goes on saving checkpoints (testing a checkpoint restores callbacks too).
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return
        self.best_model_path = ""  # a path of the earlier run's folder, not of this run
        if self.monitor is None or state_dict.get("best_model_score") is None:
            return
        best_k = {str(path): score for path, score in (state_dict.get("best_k_models") or {}).items()}
        if not best_k and state_dict.get("best_model_path"):
            best_k = {str(state_dict["best_model_path"]): state_dict["best_model_score"]}
        copies = {old: str(Path(self.dirpath) / Path(old).name) for old in best_k}
        error = None
        if trainer.is_global_zero:
            error = self._copy_checkpoints(copies, Path(trainer.ckpt_path or "").parent)
        error = trainer.strategy.broadcast(error)
        if error:
            raise UserError(error)
        self.best_k_models = {copies[old]: score for old, score in best_k.items()}
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = copies.get(str(state_dict.get("best_model_path")), "")
        kth = str(state_dict.get("kth_best_model_path"))
        self.kth_best_model_path = copies.get(kth, self.best_model_path)
        self.kth_value = state_dict.get("kth_value", self.best_model_score)
        log.info(
            "Kept the best checkpoint of the resumed run (%s=%.4f): %s",
            self.monitor,
            float(self.best_model_score),
            self.best_model_path,
        )

    @staticmethod
    def _copy_checkpoints(copies: dict[str, str], resumed_folder: Path) -> str | None:
        """Copy each earlier checkpoint to its new path; the message of the first one missing, or None."""
        for old, new in copies.items():
            candidates = [Path(old), resumed_folder / Path(old).name]
            source = next((path for path in candidates if path.is_file()), None)
            if source is None:
                return (
                    f"The run being resumed kept its best checkpoint at {old}, which no longer exists (nor "
                    f"beside the resumed checkpoint, in {resumed_folder}). Without it this run cannot test "
                    "its best weights: put the file back, or start a new run instead of resuming."
                )
            copy_atomically(source, new)
        return None


def _training_point(trainer: L.Trainer) -> tuple[int, dict[str, Any]]:
    """Where training is: the step and the full progress of the fit loop (equal only at the same moment)."""
    return trainer.global_step, trainer.fit_loop.state_dict()
