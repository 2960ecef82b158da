"""lm-eval's HF model class around an in-memory model (plain transformers or a peft PeftModel)."""

from __future__ import annotations

from typing import Any


def make_hflm(model: Any, tokenizer: Any, batch_size: int, max_new_tokens: int):
    from lm_eval.models.huggingface import HFLM

    class InMemoryHFLM(HFLM):
        """HFLM that never asks the hub about the model (it has no hub id: it lives in memory)."""

        def get_model_info(self) -> dict:
            return {"model_num_parameters": sum(p.numel() for p in self._model.parameters()),
                    "model_dtype": str(next(self._model.parameters()).dtype), "model_revision": "in-memory",
                    "model_sha": ""}

    # add_bos_token=False: the chat template already starts the text the way the model expects,
    # and the trainers encode prompts with add_special_tokens=False; evaluation must see the same ids.
    return InMemoryHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_gen_toks=max_new_tokens,
                        add_bos_token=False)
