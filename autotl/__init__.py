"""autotl: search transfer-learning strategies x hyperparameters, keep the best model.

Public surface: `search`, `work`, `export_best`, `predict`, `load`, `task_outputs`, `hookimpl`, `Strategy`, `Plan`, `Stage`,
`ParamGroup`, `Step`, the strategy helpers and the errors. Importing autotl imports neither torch nor transformers.
"""

__version__ = "0.1.0"

from .api import SearchResult, export_best, load, predict, search, task_outputs, work
from .errors import AutotlError, DataError, ModelError, PluginError, StrategyError, UsageError
from .hookspecs import hookimpl
from .strategy import (ParamGroup, Plan, Stage, Step, Strategy, TrainingSpace, one_stage, read_training,
                       suggest_training)

__all__ = [
    "search", "work", "export_best", "predict", "load", "task_outputs", "SearchResult", "hookimpl", "Strategy", "Plan", "Stage",
    "ParamGroup", "Step", "TrainingSpace", "one_stage", "suggest_training", "read_training", "AutotlError",
    "DataError", "ModelError", "PluginError", "StrategyError", "UsageError", "__version__",
]
