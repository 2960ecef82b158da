from pefthub.methods.base import (FALLBACK_LEARNING_RATE, PAPER_TARGET_MODULES, AdapterBytes, Method, MethodConfig,
                                  config_field, matching_linears, meta_copy, model_size)
from pefthub.settings import setting

__all__ = ["FALLBACK_LEARNING_RATE", "PAPER_TARGET_MODULES", "AdapterBytes", "Method", "MethodConfig", "config_field",
           "matching_linears", "meta_copy", "model_size", "setting"]
