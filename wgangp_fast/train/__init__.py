"""The WGAN-GP trainer (`wgangp-fast train`) and what it trains on.

    from wgangp_fast.train import WGANGPConfig, WGANGPTrainer
    trainer = WGANGPTrainer(WGANGPConfig.for_dataset("ring8", steps=2000, out_dir="runs/ring8"))
    trainer.train(progress=True)

- config.py      WGANGPConfig, DATASET_PRESETS, the checks of a configuration, what a resume may
                 change, and the command-line flag of each setting
- checkpoint.py  atomic checkpoint writes and their checks, RNG states
- folder.py      the output folder's lock, stale temporaries, the free-space check
- outputs.py     samples, pictures, metrics.json, history.csv, config.json
- logs.py        watching a run: history.csv appended as it goes, TensorBoard, sample grids
- sampling.py    sample(): N samples of a trained run in the data's units (wgangp-fast sample)
- trainer.py     WGANGPTrainer: the data, the loop, the logs' reads and the outputs
- trainer_build.py   its models, optimisers, checks before the first step and the one
                 wgangp_fast.steps.TrainStep every iteration runs through (the losses live there)
- trainer_state.py   its state_dict, checkpoints and from_checkpoint (resume)
- trainer_classes.py, class_outputs.py   conditional runs: labels, models, per-class outputs
- trainer_quality.py, fid.py   FID / KID / IS during and after image runs
- models.py, models_resnet.py, models_conditional.py, data/, metrics.py, distributed.py   the
                 networks (the WGAN-GP paper's ResNet, the conditional wrappers), datasets (one
                 file per kind of source), sample-quality metrics and data parallelism under
                 torchrun
"""

from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    CheckpointWriteError,
    atomic_save,
    check_checkpoint,
)
from .config import DATASET_PRESETS, WGANGPConfig
from .folder import OutputFolderError, lock_output_folder
from .sampling import sample
from .trainer import NonFiniteLossError, TrainingInterrupted, WGANGPTrainer

__all__ = [
    "CHECKPOINT_NAME",
    "DATASET_PRESETS",
    "CheckpointError",
    "CheckpointWriteError",
    "NonFiniteLossError",
    "OutputFolderError",
    "TrainingInterrupted",
    "WGANGPConfig",
    "WGANGPTrainer",
    "atomic_save",
    "check_checkpoint",
    "lock_output_folder",
    "sample",
]
