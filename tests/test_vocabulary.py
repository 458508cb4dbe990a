"""The one Spark vocabulary builder: each filter against a plain count, gensim's Dictionary and
word2vec vocabulary reproduced exactly, hashing, JSON, and the refusal of bad filters."""

import json
import warnings
import zlib
from collections import Counter

import numpy as np
import pytest
from gensim.corpora import Dictionary
from gensim.models import Word2Vec

from deepdist.errors import ConfigurationError
from deepdist.lda.corpus import Vocabulary as CorpusVocabulary, build_vocabulary as corpus_build_vocabulary
from deepdist.lda.dictionary import build_dictionary
from deepdist.vocabulary import Vocabulary, build_vocabulary
from deepdist.word2vec.vocabulary import count_vocabulary



@pytest.fixture(params=["driver", "shuffle"])
def partitions(request, monkeypatch):
    """3 partitions, their counters merged on the driver, or (a lower threshold) by a shuffle."""
    if request.param == "shuffle":
        monkeypatch.setattr("deepdist.vocabulary._MERGE_ON_DRIVER_MAX", 2)
    return 3


@pytest.fixture(scope="module")
def docs():
    """300 documents of Zipf-ish tokens, with repeats in a document and many ties in counts."""
    rng = np.random.default_rng(5)
    words = [f"t{i}" for i in range(60)]
    p = np.arange(60, 0, -1) / 1830
    return [list(rng.choice(words, size=rng.integers(1, 15), p=p)) for _ in range(300)]


def _counts(docs):
    cf = Counter(t for d in docs for t in d)
    df = Counter(t for d in docs for t in set(d))
    return cf, df


def _gensim(docs, **options):
    expected = Dictionary(docs)
    expected.filter_extremes(**options)
    return expected


def _same_dictionary(got, expected):
    assert got.token2id == expected.token2id
    assert got.dfs == expected.dfs and got.cfs == expected.cfs
    assert (got.num_docs, got.num_pos, got.num_nnz) == (expected.num_docs, expected.num_pos, expected.num_nnz)


# -- each filter ---------------------------------------------------------------------------------------
def test_each_filter_keeps_what_a_plain_count_keeps(sc, docs, partitions):
    cf, df = _counts(docs)
    rdd = sc.parallelize(docs, partitions)
    cases = [
        ({"min_count": 40}, lambda t: cf[t] >= 40),
        ({"min_df": 30}, lambda t: df[t] >= 30),
        ({"max_df": 0.1}, lambda t: df[t] <= 30),          # a fraction of the 300 documents
        ({"max_df": 12}, lambda t: df[t] <= 12),           # a number of documents
        ({"min_count": 20, "stop_words": {"t0", "t1"}}, lambda t: cf[t] >= 20 and t not in ("t0", "t1")),
        ({"min_count": 60, "keep_words": {"t59", "t58", "t0", "absent"}, "stop_words": {"t0"}},
         lambda t: (cf[t] >= 60 or t in ("t59", "t58")) and t != "t0"),
    ]
    for options, keeps in cases:
        vocab = build_vocabulary(rdd, **options)
        expected = sorted((t for t in cf if keeps(t)), key=lambda t: (-cf[t], t))
        assert 0 < len(expected) < len(cf), options  # each case filters something
        assert vocab.id2word == expected, options  # ids by decreasing count, ties by token
        assert vocab.cfs.tolist() == [cf[t] for t in expected]
        assert vocab.dfs.tolist() == [df[t] for t in expected]
        # the totals count every token, the dropped ones too
        assert (vocab.num_docs, vocab.num_tokens, vocab.num_nnz) == (300, sum(cf.values()), sum(df.values()))


def test_max_vocab_ranks_by_count_or_by_documents(sc, docs, partitions):
    cf, df = _counts(docs)
    rdd = sc.parallelize(docs, partitions)
    ranked = sorted(cf, key=lambda t: (-cf[t], t))
    assert cf[ranked[25]] == cf[ranked[26]]  # the cut goes through a tie: broken by token
    assert build_vocabulary(rdd, max_vocab=26).id2word == ranked[:26]
    rare = min(df, key=lambda t: (df[t], t))
    by_docs = build_vocabulary(rdd, max_vocab=29, rank_by="documents", keep_words=[rare])
    # gensim's keep_n: most documents first, ties by first appearance (gensim's ids); kept words first
    gensim_id = Dictionary(docs).token2id
    ranked = sorted(df, key=lambda t: (-(300 if t == rare else df[t]), gensim_id[t]))
    assert df[ranked[28]] == df[ranked[29]]  # the cut goes through a tie
    assert by_docs.id2word == sorted(ranked[:29], key=lambda t: (-cf[t], t)) and rare in by_docs.id2word
    assert by_docs.id2word != sorted(sorted(df, key=lambda t: (-df[t], t))[:29], key=lambda t: (-cf[t], t))


def test_ids_and_the_two_id_orders(sc, docs):
    vocab = build_vocabulary(sc.parallelize(docs, 3), min_count=10, stop_words={"t2"})
    doc = ["t0", "t2", "nope", "t3", "t0"]
    assert vocab.ids(doc).tolist() == [vocab.token2id["t0"], vocab.token2id["t3"], vocab.token2id["t0"]]
    by_frequency = vocab.to_dictionary()
    assert [by_frequency[i] for i in range(len(vocab))] == vocab.id2word
    assert by_frequency.cfs == dict(enumerate(vocab.cfs.tolist()))
    first_seen = vocab.to_dictionary(order="first_seen")
    # gensim's order: by the first document holding the token, a document's new tokens sorted
    order = []
    for d in docs:
        order += sorted({t for t in d if t in vocab.token2id and t not in order})
    assert [first_seen[i] for i in range(len(vocab))] == order
    assert {t: first_seen.cfs[i] for t, i in first_seen.token2id.items()} == dict(vocab.word_freq)
    with pytest.raises(ConfigurationError, match="order must be one of"):
        vocab.to_dictionary(order="alphabetical")


# -- gensim ---------------------------------------------------------------------------------------------
def test_to_dictionary_is_gensims_dictionary(sc, docs, partitions):
    rdd = sc.parallelize(docs, partitions)
    cases = [  # (gensim's filter_extremes, ours); keep_n=25 cuts through a tie in document counts
        ({"no_below": 3, "no_above": 0.5, "keep_n": 25}, {"min_df": 3, "max_df": 0.5, "max_vocab": 25}),
        ({"no_below": 7, "no_above": 0.2, "keep_n": None, "keep_tokens": ["t0", "t59", "t57"]},
         {"min_df": 7, "max_df": 0.2, "keep_words": ["t0", "t59", "t57"]}),
        ({"no_below": 1, "no_above": 1.0, "keep_n": 7, "keep_tokens": ["t40"]},
         {"max_vocab": 7, "keep_words": ["t40"]}),
    ]
    for gensim_options, ours in cases:
        expected = _gensim(docs, **gensim_options)
        got = build_vocabulary(rdd, rank_by="documents", **ours).to_dictionary(order="first_seen")
        _same_dictionary(got, expected)
        assert got.doc2bow(docs[7]) == expected.doc2bow(docs[7])


def test_bytes_tokens_count_as_gensim_decodes_them(sc):
    docs = [[b"caf\xc3\xa9", "tea"], ["café", "tea", "tea"]]
    got = build_vocabulary(sc.parallelize(docs, 2)).to_dictionary(order="first_seen")
    _same_dictionary(got, Dictionary(docs))


def test_deprecated_build_dictionary_warns_and_stays_gensims(sc, docs, partitions):
    options = {"no_below": 4, "no_above": 0.3, "keep_n": 12, "keep_tokens": ["t55"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = build_dictionary(sc.parallelize(docs, partitions), **options)
    assert any(issubclass(w.category, DeprecationWarning) and "build_vocabulary" in str(w.message) for w in caught)
    _same_dictionary(got, _gensim(docs, **options))
    with pytest.warns(DeprecationWarning):  # gensim keeps an empty dictionary where nothing passes
        empty = build_dictionary(sc.parallelize(docs, 2), no_below=301)
    _same_dictionary(empty, _gensim(docs, no_below=301))


def test_word2vec_counts_are_gensims_raw_counts(sc, partitions):
    from gensim.test.utils import datapath
    from gensim.utils import simple_preprocess

    with open(datapath("lee_background.cor"), encoding="utf-8") as handle:
        sentences = [simple_preprocess(line) for line in handle if line.strip()]
    word_freq, total, count = count_vocabulary(sc.parallelize(sentences, partitions), min_count=5)
    reference = Word2Vec(min_count=5, vector_size=8)
    total_words, corpus_count = reference.scan_vocab(sentences)
    raw = {w: c for w, c in reference.raw_vocab.items() if c >= 5}
    assert list(word_freq.items()) == list(raw.items())  # the counts, and gensim's order of first appearance
    assert (total, count) == (total_words, corpus_count) == (sum(map(len, sentences)), len(sentences))
    # so the word2vec vocabulary is gensim's, indices included (ties in count keep that order)
    ours = Word2Vec(min_count=5, vector_size=8)
    ours.build_vocab_from_freq(word_freq, corpus_count=count)
    theirs = Word2Vec(min_count=5, vector_size=8)
    theirs.build_vocab(sentences)
    assert ours.wv.index_to_key == theirs.wv.index_to_key


# -- hashing -------------------------------------------------------------------------------------------
def test_hashed_vocabulary_sums_counts_per_bucket(sc, docs, partitions):
    cf, df = _counts(docs)
    buckets, stop = 16, {"t0"}
    bucket_of = {t: zlib.crc32(t.encode("utf-8")) % buckets for t in cf}
    bucket_cf = Counter()
    for t, c in cf.items():
        if t not in stop:
            bucket_cf[bucket_of[t]] += c
    rdd = sc.parallelize(docs, partitions)
    rare = min(cf, key=lambda t: (cf[t], t))
    vocab = build_vocabulary(rdd, hash_buckets=buckets, min_count=150, stop_words=stop, keep_words=[rare])
    assert len(vocab) == buckets and vocab.buckets == buckets
    assert vocab.cfs.tolist() == [bucket_cf[b] for b in range(buckets)]
    expected_kept = {b for b, c in bucket_cf.items() if c >= 150} | {bucket_of[rare]}
    assert set(np.flatnonzero(vocab.kept)) == expected_kept and len(expected_kept) < buckets
    doc = ["t0", "t1", rare, "t30"]
    expected_ids = [bucket_of[t] for t in doc[1:] if bucket_of[t] in expected_kept]
    assert vocab.ids(doc).tolist() == expected_ids
    label = vocab.id2word[bucket_of["t1"]].split("|")
    in_bucket = sorted((t for t in cf if bucket_of[t] == bucket_of["t1"] and t not in stop), key=lambda t: (-cf[t], t))
    assert label == in_bucket[:3]  # the bucket's three most frequent tokens
    top = build_vocabulary(rdd, hash_buckets=buckets, max_vocab=3, stop_words=stop)
    assert set(np.flatnonzero(top.kept)) == set(sorted(bucket_cf, key=lambda b: (-bucket_cf[b], b))[:3])
    with pytest.raises(ConfigurationError, match="hash"):
        vocab.to_dictionary()


# -- persistence, pickling, the old homes -----------------------------------------------------------------
def test_json_round_trip_keeps_ids_and_counts(sc, docs):
    vocab = build_vocabulary(sc.parallelize(docs, 3), min_count=10, stop_words={"t1"})
    again = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again.id2word == vocab.id2word and again.stop_words == vocab.stop_words
    _same_dictionary(again.to_dictionary(order="first_seen"), vocab.to_dictionary(order="first_seen"))
    assert again.word_freq == vocab.word_freq and list(again.word_freq) == list(vocab.word_freq)
    hashed = build_vocabulary(sc.parallelize(docs, 3), hash_buckets=8, min_count=300)
    back = Vocabulary.from_json(json.loads(json.dumps(hashed.to_json())))
    assert back.kept.tolist() == hashed.kept.tolist() and back.ids(docs[0]).tolist() == hashed.ids(docs[0]).tolist()
    old = Vocabulary.from_json({"id2word": ["a", "b"], "buckets": None, "stop_words": [], "kept": None})
    assert old.ids(["b", "a", "c"]).tolist() == [1, 0] and old.cfs is None  # written before counts were kept
    assert old.to_dictionary().token2id == {"a": 0, "b": 1}


def test_the_sampler_imports_the_same_builder():
    assert CorpusVocabulary is Vocabulary and corpus_build_vocabulary is build_vocabulary


def test_empty_vocabulary_is_refused_unless_allowed(sc, docs):
    rdd = sc.parallelize(docs, 2)
    with pytest.raises(ConfigurationError, match="no token is left"):
        build_vocabulary(rdd, min_count=10_000)
    empty = build_vocabulary(rdd, min_count=10_000, allow_empty=True)
    assert len(empty) == 0 and empty.num_docs == 300 and empty.word_freq == {}


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, name", [
    ({"min_count": True}, "min_count"), ({"min_count": -1}, "min_count"), ({"min_count": 2.0}, "min_count"),
    ({"min_df": True}, "min_df"), ({"max_df": True}, "max_df"), ({"max_df": -0.5}, "max_df"),
    ({"max_df": float("nan")}, "max_df"), ({"max_vocab": False}, "max_vocab"), ({"max_vocab": -1}, "max_vocab"),
    ({"hash_buckets": 1}, "hash_buckets"), ({"hash_buckets": True}, "hash_buckets"),
    ({"rank_by": "df"}, "rank_by"), ({"stop_words": "the"}, "stop_words"), ({"keep_words": 3}, "keep_words"),
    ({"count_documents": 1}, "count_documents"), ({"count_documents": False, "min_df": 2}, "count_documents"),
    ({"allow_empty": "yes"}, "allow_empty"),
])
def test_bad_filters_are_refused_by_name(sc, options, name):
    with pytest.raises(ConfigurationError, match=name):
        build_vocabulary(sc.parallelize([["a"]]), **options)


def test_deprecated_build_dictionary_refuses_by_its_own_names(sc):
    for options, name in (({"no_above": 2.0}, "no_above"), ({"no_below": True}, "no_below"),
                          ({"keep_n": -3}, "keep_n"), ({"keep_tokens": "abc"}, "keep_tokens")):
        with pytest.raises(ConfigurationError, match=name):
            build_dictionary(sc.parallelize([["a"]]), **options)
