"""word2vec on deepdist: gensim's compiled training loops, Downpour-trained on Spark.

    >>> from deepdist.word2vec import DistributedWord2Vec                      # doctest: +SKIP
    >>> w2v = DistributedWord2Vec(vector_size=100, epochs=5).fit(sentences)    # doctest: +SKIP
    >>> w2v.model_.wv.most_similar("king")                                     # doctest: +SKIP

Modules: :mod:`.estimator` (the estimator), :mod:`.descent` (the driver's row-sparse descents),
:mod:`.evaluate` (analogies, word similarity, held-out loss).
"""

from .descent import AddDeltas, RowAdaGrad
from .estimator import DistributedWord2Vec, count_vocabulary

__all__ = ["AddDeltas", "DistributedWord2Vec", "RowAdaGrad", "count_vocabulary"]
