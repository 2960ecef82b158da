"""Imported by the local executor's fork server: torch, transformers and the runner load once there."""

from pefthub.executors.worker import preload

preload()
