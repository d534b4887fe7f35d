"""Shipped sepsis models (`models/<name>/<version>/`), their cards, the registry and the one
inference runtime. `StepRuntime` is imported lazily so reading cards never loads onnxruntime."""
from models.card import FEATURES, ModelCard, ModelCardError, load_card

__all__ = ["FEATURES", "ModelCard", "ModelCardError", "load_card", "StepRuntime", "StepResult",
           "ModelContractError", "ModelInputError", "ModelInfo", "ModelNotFoundError", "list_models",
           "resolve"]

_LAZY = {
    "StepRuntime": "models.runtime", "StepResult": "models.runtime",
    "ModelContractError": "models.runtime", "ModelInputError": "models.runtime",
    "ModelInfo": "models.registry", "ModelNotFoundError": "models.registry",
    "list_models": "models.registry", "resolve": "models.registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
