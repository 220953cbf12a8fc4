"""Synthetic data generated in JAX: sequence tasks (BOS first), a text reader, graphs.

May import: `rc_jax.routers` (hop counts of a graph), JAX, NumPy."""

from rc_jax.tasks.backcopy import bigram_backcopy_task
from rc_jax.tasks.batch import BOS
from rc_jax.tasks.batch import Batch
from rc_jax.tasks.graphs import GraphTask
from rc_jax.tasks.graphs import stochastic_block_model
from rc_jax.tasks.markov import markov_task
from rc_jax.tasks.markov import zipf_transition_matrix
from rc_jax.tasks.random_tokens import random_tokens_task
from rc_jax.tasks.recall import associative_recall_task
from rc_jax.tasks.registry import SEQUENCE_TASKS
from rc_jax.tasks.registry import make_sequence_task
from rc_jax.tasks.text import TEXT_VOCAB_SIZE
from rc_jax.tasks.text import text_file_task
