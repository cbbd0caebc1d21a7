"""numvox's main job end to end: a 3-D landmark U-Net whose outputs flow into numvox.

- :func:`generate_phantom` / :func:`training_targets` (:mod:`.phantom`): synthetic anatomy with
  landmarks, deterministic per seed (NumPy/SciPy only);
- :mod:`.model`: the Keras 3-D U-Net with a class head and an offset head (imports
  TensorFlow); ``python -m numvox.demo.train`` re-trains the bundled weights;
- :func:`standin_outputs` (:mod:`.standin`): synthetic model outputs for machines without
  TensorFlow;
- :func:`run_demo` (:mod:`.runner`): what ``numvox demo`` runs.

Importing this package does not import TensorFlow.
"""

from .phantom import LANDMARK_NAMES, N_LANDMARKS, TRAIN_SEED_BASE, generate_phantom, training_targets
from .runner import format_report, run_demo, tensorflow_available
from .standin import standin_outputs

__all__ = [
    "LANDMARK_NAMES",
    "N_LANDMARKS",
    "TRAIN_SEED_BASE",
    "generate_phantom",
    "training_targets",
    "standin_outputs",
    "run_demo",
    "format_report",
    "tensorflow_available",
]
