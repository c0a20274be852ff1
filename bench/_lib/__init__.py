"""The parts of bench/train_step.py, one module per job; this package holds what they share.

bench/train_step.py (the CLI) parses the arguments and orchestrates; `specs` holds the devices' peaks and
the config of a measured step, `children` runs every measurement in its own process, `measure` compiles
and times the step and counts its FLOPs and memory, `profile` splits a jax.profiler trace by kernel,
`batch_search` finds the largest batch that trains, `torch_timing` times the PyTorch reference and
`tables` writes the report's Markdown. Every module imports only the standard library at its top (jax,
torch and stjax inside the functions that need them), so the parent process never starts an
accelerator and nothing here imports TensorFlow.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
BENCH = ROOT / "bench"
RESULT_TAG = "RESULT "  # the line of a child's output that holds its result: RESULT_TAG + JSON
PARTIAL_TAG = "PARTIAL "  # what a child has measured so far, kept if it dies or runs out of time
