from pefthub.methods.base import (PAPER_TARGET_MODULES, AdapterBytes, Method, MethodConfig, config_field,
                                  matching_linears, meta_copy, model_size)

__all__ = ["PAPER_TARGET_MODULES", "AdapterBytes", "Method", "MethodConfig", "config_field",
           "matching_linears", "meta_copy", "model_size"]
