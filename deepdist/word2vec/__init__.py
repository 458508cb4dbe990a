"""word2vec on Spark: gensim's compiled training loops, Downpour-trained by deepdist.

word2vec (Mikolov et al. 2013) learns a vector ``v_w`` (gensim's ``wv.vectors``)
and an output vector ``u_w`` (``syn1neg`` for negative sampling, ``syn1`` for the
inner nodes of hierarchical softmax) per word, by SGD over (center, context) pairs.
Here the SGD runs asynchronously on the Spark executors (Downpour SGD, Dean et al.
2012):

* Spark counts the vocabulary (a distributed word count with ``min_count``; the
  text never reaches the driver) and gensim builds the model from the counts
  (``Word2Vec.build_vocab_from_freq``).
* Sentences become *jobs* of about 10,000 words of vocabulary indices (gensim's
  ``batch_words``), built on the executors inside the first training job.  The
  model's static part (sampling tables, Huffman codes, configuration) reaches the
  executors by broadcast; the string vocabulary goes once, to build the jobs.
* For each batch of jobs a task pulls from the driver's model server only the rows
  of ``wv.vectors`` and ``syn1neg`` / ``syn1`` it will touch, trains with gensim's
  own ``train_batch_sg`` / ``train_batch_cbow`` and pushes the row deltas, sparse.
* The learning rate follows *global* progress: a one-element counter of the words
  processed by all tasks lives on the server next to the weights; every push adds
  to it, every pull reads it, and ``alpha = alpha0 - (alpha0 - min_alpha) * progress``
  exactly as gensim schedules it.
* On the driver the deltas are added (``descent="add"``) or scaled per row by
  AdaGrad (``descent="adagrad"``, Duchi et al. 2011).  Optionally a row's delta is
  divided by ``1 + its staleness`` (pushes applied to that row since the task
  pulled it, ``stale_rows``): rows all tasks move at once then get the mean of the
  concurrent deltas rather than their sum.  That tames the sum's overshoot on
  frequent words when batches are large, but halves the step of mid-frequency
  words; with the default batches of 2 jobs plain sums match gensim best.

Negative samples keep gensim's distribution without shipping all of ``syn1neg``: a
task draws a pool of negatives from the global unigram^0.75 table before it pulls,
pulls those rows, and gensim's kernel samples from the pool.  Each draw still has
the global distribution, so the expected gradient is gensim's (``negative_pool``).

The result, :attr:`DistributedWord2Vec.model_`, is an ordinary gensim ``Word2Vec``;
``fit`` returns the estimator, whose ``history_`` holds one record per epoch.

Example (``local[2]``)::

    >>> from deepdist.word2vec import DistributedWord2Vec
    >>> sentences = spark.sparkContext.parallelize(token_lists, 4)             # doctest: +SKIP
    >>> w2v = DistributedWord2Vec(vector_size=100, epochs=5).fit(sentences)    # doctest: +SKIP
    >>> w2v.model_.wv.most_similar("king")                                     # doctest: +SKIP

Modules: :mod:`.estimator` (the estimator), :mod:`.training` (what the tasks run),
:mod:`.clock` (the per-epoch records), :mod:`.descent` (the driver's row-sparse descents),
:mod:`.vocabulary` (the Spark word count), :mod:`.evaluate` (analogies, word similarity,
held-out loss).
"""

from .descent import AddDeltas, RowAdaGrad
from .estimator import DistributedWord2Vec
from .vocabulary import count_vocabulary

__all__ = ["AddDeltas", "DistributedWord2Vec", "RowAdaGrad", "count_vocabulary"]
