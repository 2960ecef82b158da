"""The built-in trainers, registered through the same hook a third-party plugin uses."""

from pefthub.hookspecs import hookimpl
from pefthub.trainers.grpo import GRPOTrainer
from pefthub.trainers.sft import SFTTrainer
from pefthub.trainers.trl_engine import TRLGRPOTrainer, TRLSFTTrainer


@hookimpl
def register_trainers(register):
    register(SFTTrainer)
    register(GRPOTrainer)
    register(TRLSFTTrainer)
    register(TRLGRPOTrainer)
