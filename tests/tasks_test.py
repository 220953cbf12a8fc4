"""Tests for rc_jax.tasks: synthetic sequence tasks, the text reader and the SBM graph."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rc_jax import tasks
from rc_jax.tasks import backcopy

VOCAB, SEQ, BATCH = 16, 24, 8


def _sampler(name, **options):
  sizes = dict(vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH)
  sizes.update(options)
  return tasks.make_sequence_task(name, task_key=jax.random.key(7), **sizes)


@pytest.mark.slow
class SequenceTaskTest(parameterized.TestCase):

  @parameterized.parameters(*tasks.SEQUENCE_TASKS)
  def test_shapes_dtypes_bos_and_shift(self, name):
    batch = jax.jit(_sampler(name))(jax.random.key(0))
    chex.assert_shape([batch.inputs, batch.targets, batch.loss_mask], (BATCH, SEQ))
    chex.assert_type([batch.inputs, batch.targets, batch.loss_mask],
                     [jnp.int32, jnp.int32, jnp.float32])
    inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
    np.testing.assert_array_equal(inputs[:, 0], tasks.BOS)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    self.assertTrue(np.all(targets >= 1) and np.all(targets < VOCAB))
    self.assertTrue(np.all(inputs[:, 1:] >= 1))
    self.assertTrue(set(np.unique(batch.loss_mask)) <= {0.0, 1.0})
    self.assertGreater(float(batch.loss_mask.sum()), 0.0)

  @parameterized.parameters(*tasks.SEQUENCE_TASKS)
  def test_deterministic_in_key(self, name):
    sample = jax.jit(_sampler(name))
    first, again = sample(jax.random.key(1)), sample(jax.random.key(1))
    other = sample(jax.random.key(2))
    chex.assert_trees_all_equal(first, again)
    self.assertFalse(np.array_equal(first.inputs, other.inputs))

  @parameterized.parameters(*tasks.SEQUENCE_TASKS)
  def test_vmap_over_keys(self, name):
    keys = jax.random.split(jax.random.key(3), 4)
    stacked = jax.jit(jax.vmap(_sampler(name)))(keys)
    chex.assert_shape([stacked.inputs, stacked.targets, stacked.loss_mask], (4, BATCH, SEQ))
    single = jax.jit(_sampler(name))(keys[2])
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[2], stacked), single)

  @parameterized.parameters("markov", "bigram_backcopy")
  def test_task_key_fixes_the_chain(self, name):
    def sample(task_seed, batch_seed):
      sampler = tasks.make_sequence_task(name, vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH,
                                         task_key=jax.random.key(task_seed))
      return sampler(jax.random.key(batch_seed)).inputs
    np.testing.assert_array_equal(sample(5, 0), sample(5, 0))
    self.assertFalse(np.array_equal(sample(5, 0), sample(6, 0)))

  def test_zipf_rows(self):
    exponent = 1.5
    matrix = np.asarray(tasks.zipf_transition_matrix(jax.random.key(0), VOCAB, exponent))
    self.assertEqual(matrix.shape, (VOCAB, VOCAB))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(matrix[:, tasks.BOS], 0.0)
    profile = np.arange(1, VOCAB, dtype=np.float64)**-exponent
    profile /= profile.sum()
    np.testing.assert_allclose(-np.sort(-matrix[:, 1:], axis=1), np.tile(profile, (VOCAB, 1)),
                               rtol=1e-5)
    self.assertGreater(len({tuple(np.argsort(row)) for row in matrix}), VOCAB // 2)
    other = tasks.zipf_transition_matrix(jax.random.key(1), VOCAB, exponent)
    self.assertFalse(np.allclose(matrix, other))

  def test_markov_empirical_transitions_match_matrix(self):
    vocab, task_key = 6, jax.random.key(11)
    sample = tasks.make_sequence_task("markov", vocab_size=vocab, seq_len=256, batch_size=128,
                                      task_key=task_key, exponent=1.0)
    batch = jax.jit(sample)(jax.random.key(0))
    current = np.asarray(batch.inputs[:, 1:]).ravel()
    following = np.asarray(batch.targets[:, 1:]).ravel()
    counts = np.zeros((vocab, vocab))
    np.add.at(counts, (current, following), 1)
    frequencies = counts[1:] / counts[1:].sum(axis=1, keepdims=True)
    matrix = np.asarray(tasks.zipf_transition_matrix(task_key, vocab, 1.0))
    np.testing.assert_allclose(frequencies, matrix[1:], atol=0.02)

  def test_bigram_backcopy_copies_after_triggers(self):
    n_triggers = 3
    batch = _sampler("bigram_backcopy", n_triggers=n_triggers, seq_len=128)(jax.random.key(4))
    tokens = np.concatenate([batch.inputs, batch.targets[:, -1:]], axis=1)
    is_trigger = (tokens >= 1) & (tokens <= n_triggers)
    np.testing.assert_array_equal(
        np.asarray(backcopy.trigger_mask(VOCAB, n_triggers)),
        [False] + [True] * n_triggers + [False] * (VOCAB - 1 - n_triggers))
    self.assertFalse(is_trigger[:, 1].any())  # the first content token is never a trigger
    after_trigger = is_trigger[:, 1:-1]
    self.assertGreater(after_trigger.sum(), 20)
    np.testing.assert_array_equal(tokens[:, 2:][after_trigger], tokens[:, :-2][after_trigger])
    self.assertFalse((is_trigger[:, 1:] & is_trigger[:, :-1]).any())

  @parameterized.parameters((None, 23), (3, 24))
  def test_associative_recall_answers_the_paired_value(self, n_pairs, seq_len):
    vocab = 20
    options = {} if n_pairs is None else dict(n_pairs=n_pairs)
    batch = tasks.make_sequence_task("associative_recall", vocab_size=vocab, seq_len=seq_len,
                                     batch_size=BATCH, task_key=jax.random.key(0),
                                     **options)(jax.random.key(5))
    pairs = 9 if n_pairs is None else n_pairs  # (vocab - 1) // 2 = 9 keys; (23 - 2) // 2 = 10
    n_keys = (vocab - 1) // 2
    inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
    mask = np.asarray(batch.loss_mask)
    expected_mask = np.zeros(seq_len)
    expected_mask[2 * pairs + 1::2] = 1.0
    np.testing.assert_array_equal(mask, np.tile(expected_mask, (BATCH, 1)))
    for row_in, row_target, row_mask in zip(inputs, targets, mask):
      keys, values = row_in[1:2 * pairs:2], row_in[2:2 * pairs + 1:2]
      self.assertLen(set(keys), pairs)
      self.assertTrue(np.all(keys <= n_keys) and np.all(values > n_keys))
      table = dict(zip(keys, values))
      for position in np.flatnonzero(row_mask):
        self.assertEqual(row_target[position], table[row_in[position]])

  def test_random_tokens_cover_the_vocabulary(self):
    batch = _sampler("random_tokens")(jax.random.key(0))
    self.assertEqual(set(np.unique(batch.targets)), set(range(1, VOCAB)))

  @parameterized.named_parameters(
      ("unknown_name", "nope", {}, "known tasks: random_tokens, markov"),
      ("vocab_too_small", "markov", dict(vocab_size=1), "vocab_size"),
      ("seq_len_zero", "random_tokens", dict(seq_len=0), "seq_len"),
      ("batch_not_int", "markov", dict(batch_size=2.0), "batch_size"),
      ("negative_exponent", "markov", dict(exponent=-1.0), "exponent"),
      ("too_many_triggers", "bigram_backcopy", dict(vocab_size=4, n_triggers=3), "n_triggers"),
      ("too_many_pairs", "associative_recall", dict(vocab_size=7, n_pairs=4), "n_pairs"),
      ("recall_seq_too_short", "associative_recall", dict(seq_len=7, n_pairs=3), "too short"),
      ("recall_vocab", "associative_recall", dict(vocab_size=2), "vocab_size"),
  )
  def test_errors(self, name, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      _sampler(name, **overrides)


class TextFileTaskTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmpdir = self.enterContext(tempfile.TemporaryDirectory())
    self.path = os.path.join(tmpdir, "corpus.txt")
    with open(self.path, "wb") as f:
      f.write(bytes(range(256)) * 3)

  def test_windows_are_shifted_bytes(self):
    sample = tasks.text_file_task(self.path, seq_len=32, batch_size=4)
    batch = jax.jit(sample)(jax.random.key(0))
    chex.assert_shape([batch.inputs, batch.targets, batch.loss_mask], (4, 32))
    self.assertEqual(batch.inputs.dtype, jnp.int32)
    np.testing.assert_array_equal(batch.inputs[:, 0], tasks.BOS)
    content = np.concatenate([batch.inputs[:, 1:], batch.targets[:, -1:]], axis=1) - 1
    np.testing.assert_array_equal(np.diff(content, axis=1) % 256, 1)  # consecutive file bytes
    self.assertTrue(np.all(batch.targets < tasks.TEXT_VOCAB_SIZE))
    chex.assert_trees_all_equal(batch, sample(jax.random.key(0)))
    self.assertFalse(np.array_equal(batch.inputs, sample(jax.random.key(1)).inputs))
    chex.assert_shape(jax.vmap(sample)(jax.random.split(jax.random.key(0), 3)).inputs, (3, 4, 32))

  def test_whole_file_window(self):
    batch = tasks.text_file_task(self.path, seq_len=768, batch_size=2)(jax.random.key(0))
    np.testing.assert_array_equal(batch.targets[:, -1], 256)

  def test_missing_file(self):
    missing = os.path.join(tempfile.gettempdir(), "rc_jax_no_such_file.txt")
    with self.assertRaisesRegex(FileNotFoundError, "rc_jax_no_such_file.txt"):
      tasks.text_file_task(missing, seq_len=8, batch_size=2)

  def test_file_shorter_than_seq_len(self):
    with self.assertRaisesRegex(ValueError, "fewer than seq_len=769"):
      tasks.text_file_task(self.path, seq_len=769, batch_size=2)


class StochasticBlockModelTest(parameterized.TestCase):

  def _graph(self, seed=0, **overrides):
    options = dict(n_nodes=60, n_classes=3, p_in=0.3, p_out=0.03, feature_dim=5,
                   feature_noise=0.5)
    options.update(overrides)
    return tasks.stochastic_block_model(jax.random.key(seed), **options)

  def test_shapes_and_dtypes(self):
    graph = self._graph()
    chex.assert_shape([graph.features], (60, 5))
    chex.assert_shape([graph.labels, graph.train_mask, graph.test_mask], (60,))
    chex.assert_shape([graph.adjacency, graph.hops], (60, 60))
    chex.assert_type([graph.labels, graph.hops, graph.adjacency, graph.features],
                     [jnp.int32, jnp.int32, jnp.float32, jnp.float32])
    self.assertEqual(graph.train_mask.dtype, jnp.bool_)
    np.testing.assert_array_equal(np.bincount(graph.labels), [20, 20, 20])
    np.testing.assert_array_equal(graph.train_mask, ~graph.test_mask)
    self.assertEqual(int(graph.train_mask.sum()), 30)

  def test_adjacency_and_hops(self):
    graph = self._graph()
    adjacency, hops = np.asarray(graph.adjacency), np.asarray(graph.hops)
    np.testing.assert_array_equal(adjacency, adjacency.T)
    np.testing.assert_array_equal(np.diag(adjacency), 0.0)
    self.assertTrue(set(np.unique(adjacency)) <= {0.0, 1.0})
    np.testing.assert_array_equal(hops == 1, adjacency == 1)
    np.testing.assert_array_equal(np.diag(hops), 0)
    np.testing.assert_array_equal(hops, hops.T)

  def test_within_class_density_exceeds_between(self):
    graph = self._graph()
    adjacency, labels = np.asarray(graph.adjacency), np.asarray(graph.labels)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    within = adjacency[same & off_diagonal].mean()
    between = adjacency[~same].mean()
    self.assertGreater(within, 2 * between)
    self.assertAlmostEqual(within, 0.3, delta=0.08)

  def test_features_cluster_by_class(self):
    graph = self._graph(feature_noise=0.0)
    features, labels = np.asarray(graph.features), np.asarray(graph.labels)
    for label in range(3):
      members = features[labels == label]
      np.testing.assert_allclose(members, np.tile(members[:1], (len(members), 1)))

  def test_deterministic(self):
    chex.assert_trees_all_equal(self._graph(seed=1), self._graph(seed=1))
    self.assertFalse(np.array_equal(self._graph(seed=1).adjacency, self._graph(seed=2).adjacency))

  @parameterized.named_parameters(
      ("p_in", dict(p_in=1.5), "p_in"),
      ("p_out", dict(p_out=-0.1), "p_out"),
      ("too_many_classes", dict(n_classes=61), "n_classes=61"),
      ("no_nodes", dict(n_nodes=0), "n_nodes"),
      ("noise", dict(feature_noise=-1.0), "feature_noise"),
      ("feature_dim", dict(feature_dim=0), "feature_dim"),
      ("train_fraction", dict(train_fraction=2.0), "train_fraction"),
  )
  def test_errors(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      self._graph(**overrides)


if __name__ == "__main__":
  absltest.main()
