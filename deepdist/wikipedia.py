"""Wikipedia articles as a Spark RDD of token lists, by gensim's ``WikiCorpus`` rules.

Two inputs are understood:

* a MediaWiki XML dump (``*-pages-articles*.xml.bz2`` or uncompressed ``.xml``).  Spark
  reads it with Hadoop's splittable bzip2 codec, one record per ``</page>``, so the
  executors decompress and parse their own byte ranges: the dump never passes
  through the driver.  Each page is kept when it is in the main namespace
  (``<ns>0</ns>``) and is not a redirect (the ``<redirect/>`` element), then cleaned
  with :func:`gensim.corpora.wikicorpus.filter_wiki` and tokenized with
  :func:`gensim.corpora.wikicorpus.tokenize`; articles shorter than ``min_tokens``
  tokens are dropped (``ARTICLE_MIN_WORDS``).
* a directory (or glob) of plain-text files with one article per line, tokenized
  the same way.

No rule depends on the dump's language: namespaces and redirects are read from the
XML elements rather than from English title prefixes, and the category and file
links are recognised by the localized namespace names the dump declares in its
``<siteinfo>`` (plus the canonical English ones every wiki accepts).  Tokens are
runs of Unicode letters (``\\w`` without digits), so scripts written without spaces
between words (Chinese, Japanese, Thai) need a segmenter first.

Example (``local[2]``)::

    >>> from gensim.test.utils import datapath
    >>> from deepdist.wikipedia import read_articles, sentences
    >>> dump = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    >>> articles = read_articles(spark, dump)            # doctest: +SKIP
    >>> articles.first()[0]                               # doctest: +SKIP
    'Anarchism'
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
import zlib

from gensim.corpora import wikicorpus

log = logging.getLogger(__name__)

#: Hadoop input format reading records that end with a delimiter (here ``</page>``).
_TEXT_INPUT = "org.apache.hadoop.mapreduce.lib.input.TextInputFormat"

#: Category (14) and file (6) namespaces: their canonical English names work on every wiki.
_CANONICAL = {6: ["File", "Image"], 14: ["Category"]}
#: Names gensim's ``filter_wiki`` already handles; left to it, so English output matches gensim's.
_GENSIM_HANDLES = {"file", "image", "category"}


def is_dump(path: str) -> bool:
    """Whether ``path`` names an XML dump (``.xml``, ``.xml.bz2``) rather than a text directory."""
    name = os.path.basename(path.rstrip("/"))
    return name.endswith((".xml", ".xml.bz2", ".bz2"))


def _spark_context(spark):
    from .core import spark_context
    return spark_context(spark)


# -- dumps -------------------------------------------------------------------------------------
def _page_records(sc, path: str, partitions: int | None):
    conf = {"textinputformat.record.delimiter": "</page>"}
    if partitions:
        try:
            size = os.path.getsize(path)
        except OSError:  # not a local path (hdfs://, s3a://): let Hadoop choose the splits
            size = 0
        if size:
            conf["mapreduce.input.fileinputformat.split.maxsize"] = str(max(1 << 16, size // partitions + 1))
    pairs = sc.newAPIHadoopFile(path, _TEXT_INPUT, "org.apache.hadoop.io.LongWritable",
                                "org.apache.hadoop.io.Text", conf=conf)
    return pairs.values()


def namespace_names(siteinfo_xml: str) -> dict:
    """``{namespace key: [names]}`` declared in a dump's ``<siteinfo>``, plus canonical ones."""
    names = {key: list(values) for key, values in _CANONICAL.items()}
    for key, name in re.findall(r'<namespace key="(-?\d+)"[^>]*>([^<]*)</namespace>', siteinfo_xml):
        if name.strip():
            names.setdefault(int(key), []).append(name.strip())
    return names


def _link_patterns(names: dict):
    def alternatives(key):
        local = {re.escape(n) for n in names.get(key, []) if n.lower() not in _GENSIM_HANDLES}
        return "|".join(sorted(local, key=len, reverse=True)) or r"(?!)"

    category = re.compile(r"\[\[\s*(?:%s)\s*:[^\[\]]*\]\]" % alternatives(14), re.IGNORECASE | re.UNICODE)
    files = re.compile(r"\[\[\s*(?:%s)\s*:(?:[^\[\]]|\[\[[^\[\]]*\]\])*\]\]" % alternatives(6),
                       re.IGNORECASE | re.UNICODE)
    return category, files


def _file_caption(match) -> str:
    # keep a file's caption, as gensim's remove_file does: the last |-separated part
    return match.group(0)[:-2].split("|")[-1] if "|" in match.group(0) else ""


class _PageParser:
    """Turns one ``...</page>`` record into ``(title, tokens)`` or None; pickles as configuration."""

    def __init__(self, names: dict, min_tokens: int, token_min_len: int, token_max_len: int, lower: bool):
        self.names = names
        self.min_tokens = min_tokens
        self.token_min_len = token_min_len
        self.token_max_len = token_max_len
        self.lower = lower
        self._patterns = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_patterns"] = None
        return state

    def clean(self, text: str) -> str:
        if self._patterns is None:
            self._patterns = _link_patterns(self.names)
        category, files = self._patterns
        text = category.sub("", text)
        text = files.sub(_file_caption, text)
        return wikicorpus.filter_wiki(text)

    def __call__(self, record: str):
        start = record.rfind("<page>")
        if start < 0:
            return None  # the tail after the last page
        try:
            page = ET.fromstring(record[start:] + "</page>")
        except ET.ParseError:
            log.warning("skipping a page that is not well-formed XML (%.60r)", record[start:start + 200])
            return None
        if (page.findtext("ns") or "0").strip() != "0" or page.find("redirect") is not None:
            return None
        title = page.findtext("title") or ""
        text = page.findtext("revision/text") or ""
        tokens = wikicorpus.tokenize(self.clean(text), self.token_min_len, self.token_max_len, self.lower)
        if len(tokens) < self.min_tokens:
            return None
        return title, tokens


def read_dump(spark, path: str, *, partitions: int | None = None, min_tokens: int = wikicorpus.ARTICLE_MIN_WORDS,
              token_min_len: int = wikicorpus.TOKEN_MIN_LEN, token_max_len: int = wikicorpus.TOKEN_MAX_LEN,
              lower: bool = True):
    """An RDD of ``(title, tokens)``, one per article of the MediaWiki dump at ``path``.

    Parameters:
        spark: a SparkSession or SparkContext.
        path: the dump, on a path every executor can read (local file in local mode,
            HDFS / S3 / a shared mount on a cluster).
        partitions: about this many input splits (local files only); by default
            Hadoop's split size decides.
        min_tokens: drop shorter articles (gensim's ``ARTICLE_MIN_WORDS``).
        token_min_len, token_max_len, lower: as :func:`gensim.corpora.wikicorpus.tokenize`.
    """
    sc = _spark_context(spark)
    records = _page_records(sc, path, partitions)
    head = records.first()  # the siteinfo and the first page, read by one task
    names = namespace_names(head[: head.find("</siteinfo>") + 1] if "</siteinfo>" in head else "")
    parser = _PageParser(names, min_tokens, token_min_len, token_max_len, lower)
    return records.map(parser).filter(lambda article: article is not None)


# -- plain text --------------------------------------------------------------------------------
def read_text(spark, path: str, *, partitions: int | None = None, min_tokens: int = wikicorpus.ARTICLE_MIN_WORDS,
              token_min_len: int = wikicorpus.TOKEN_MIN_LEN, token_max_len: int = wikicorpus.TOKEN_MAX_LEN,
              lower: bool = True):
    """An RDD of ``(key, tokens)`` from text files with one article per line.

    ``path`` is a directory, a file or a glob that Spark can read.  The key is the
    line's first 100 characters (articles have no title here); it only serves to
    split off held-out articles deterministically.
    """
    sc = _spark_context(spark)
    lines = sc.textFile(path, minPartitions=partitions) if partitions else sc.textFile(path)

    def tokenize(line):
        tokens = wikicorpus.tokenize(line, token_min_len, token_max_len, lower)
        return (line[:100], tokens) if len(tokens) >= min_tokens else None

    return lines.map(tokenize).filter(lambda article: article is not None)


def read_articles(spark, path: str, *, max_articles: int | None = None, **options):
    """Articles ``(title, tokens)`` from a dump (:func:`read_dump`) or a text directory (:func:`read_text`).

    ``max_articles`` keeps only the first that many articles (in input order), for
    quick runs; it costs one extra pass to number them.
    """
    articles = (read_dump if is_dump(path) else read_text)(spark, path, **options)
    if max_articles is not None:
        if max_articles < 1:
            raise ValueError(f"max_articles must be >= 1, got {max_articles!r}")
        articles = (articles.zipWithIndex().filter(lambda pair: pair[1] < max_articles)
                    .map(lambda pair: pair[0]))
    return articles


# -- splitting ---------------------------------------------------------------------------------
def is_heldout(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether the article ``key`` is held out: a stable hash, the same in every process."""
    return (zlib.crc32(f"{seed}:{key}".encode("utf-8")) % 10_000) < fraction * 10_000


def split_heldout(articles, fraction: float = 0.1, seed: int = 0):
    """``(train, heldout)`` RDDs of articles; about ``fraction`` of the articles are held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    train = articles.filter(lambda article: not is_heldout(article[0], fraction, seed))
    heldout = articles.filter(lambda article: is_heldout(article[0], fraction, seed))
    return train, heldout


def sentences(articles, max_length: int = 10_000):
    """Token lists of at most ``max_length`` tokens (gensim's ``MAX_WORDS_IN_BATCH``) from articles."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length!r}")

    def chunks(article):
        tokens = article[1]
        return [tokens[i:i + max_length] for i in range(0, len(tokens), max_length)]

    return articles.flatMap(chunks)
