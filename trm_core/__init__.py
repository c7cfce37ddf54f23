"""trm_core: the Tiny Recursive Model and everything needed to run it.

The public API (docs/ARCHITECTURE.md "Public API"): TRMConfig, TRM (empty_carry / reset_rows / step),
StepOutput, save_checkpoint / load_checkpoint (safetensors), import_original (the original code's
checkpoints). Losses, halting policies and task codecs are in `trm_core.loss`, `trm_core.halting`
and `trm_core.tasks`. This package imports only torch, safetensors and the standard library.
"""

from .checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
from .config import TRMConfig
from .model import TRM, Carry, StepOutput
from .original import import_original

__all__ = [
    "TRMConfig", "TRM", "Carry", "StepOutput", "save_checkpoint", "load_checkpoint", "import_original",
    "CheckpointFormatError",
]
__version__ = "0.1.0"
