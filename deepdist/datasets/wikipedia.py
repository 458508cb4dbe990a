"""Wikipedia articles as a Spark RDD of token lists, by gensim's ``WikiCorpus`` rules.

Two inputs are understood:

* a MediaWiki XML dump (``*-pages-articles*.xml.bz2`` or uncompressed ``.xml``), of any
  export schema version (``export-0.3`` … ``export-0.11``).  Spark reads it with
  Hadoop's splittable bzip2 codec, one record per ``</page>``, so the executors
  decompress and parse their own byte ranges: the dump never passes through the
  driver.  The records stay bytes until a page is parsed, and are decoded with the
  encoding the dump declares (``<?xml ... encoding="ISO-8859-1"?>``, a UTF-16 byte-order
  mark, ...), as the expat parser under gensim's ``extract_pages`` decodes them.  Each
  page is kept when it is in the main namespace (``<ns>0</ns>``; without ``<ns>``, as
  in schemas before 0.5, the title's prefix names it) and is not a redirect (the
  ``<redirect/>`` element), then cleaned with :func:`gensim.corpora.wikicorpus.filter_wiki`
  and tokenized with :func:`gensim.corpora.wikicorpus.tokenize`; articles shorter than
  ``min_tokens`` tokens are dropped (``ARTICLE_MIN_WORDS``).  A dump in which no page
  survives raises :class:`~deepdist.errors.CorpusError` with the count of pages dropped
  for each reason.
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
    >>> from deepdist.datasets.wikipedia import read_articles, sentences
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

from ..validation import check_int, check_real

__all__ = ["dump_statistics", "is_dump", "is_heldout", "namespace_names", "read_articles", "read_dump", "read_text", "sentences", "sniff_encoding", "split_heldout"]

log = logging.getLogger(__name__)

#: Category (14) and file (6) namespaces: their canonical English names work on every wiki.
_CANONICAL = {6: ["File", "Image"], 14: ["Category"]}
#: Names gensim's ``filter_wiki`` already handles; left to it, so English output matches gensim's.
_GENSIM_HANDLES = {"file", "image", "category"}


def is_dump(path: str) -> bool:
    """Whether ``path`` names an XML dump (``.xml``, ``.xml.bz2``) rather than a text directory."""
    name = os.path.basename(path.rstrip("/"))
    return name.endswith((".xml", ".xml.bz2", ".bz2"))


def _spark_context(spark):
    from ..session import spark_context
    return spark_context(spark)


# -- dumps -------------------------------------------------------------------------------------
#: Why a page of a dump is not an article, in the order the rules are applied.
DROP_REASONS = ("unparsable", "namespace", "redirect", "too short")
_REASON_WORDS = {"unparsable": "not well-formed XML", "namespace": "outside the main namespace",
                 "redirect": "redirect", "too short": "shorter than {min_tokens} tokens"}

_DECLARATION = re.compile(rb"""^<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")


def sniff_encoding(head: bytes) -> str:
    """The Python codec for a dump that starts with ``head``, by the XML rules expat follows.

    A byte-order mark or the UTF-16 shape of ``<?`` decides first; otherwise the
    declaration's ``encoding``; otherwise UTF-8.  Raises :class:`~deepdist.errors.CorpusError`
    for an encoding Python does not know, or one in which ``</page>`` is not plain ASCII bytes
    (EBCDIC, UTF-32), which gensim's reader cannot read either.
    """
    import codecs

    from ..errors import CorpusError

    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(b"<\x00?\x00"):
        return "utf-16-le"
    if head.startswith(codecs.BOM_UTF16_BE) or head.startswith(b"\x00<\x00?"):
        return "utf-16-be"
    match = _DECLARATION.match(head)
    declared = match.group(1).decode("ascii") if match else "utf-8"
    try:
        codec = codecs.lookup(declared).name
    except LookupError as err:
        raise CorpusError(f"the dump declares encoding {declared!r}, which Python (and gensim) cannot decode") from err
    if codec.startswith("utf-16") or "</page>".encode(codec, "replace") != b"</page>":
        # expat takes UTF-16 from the bytes, never from an ASCII declaration; and the split on
        # </page> needs those bytes to be ASCII (not so in EBCDIC or UTF-32, which expat refuses too)
        raise CorpusError(f"the dump declares encoding {declared!r} but its first bytes {head[:8]!r} are "
                          "not in it; re-encode the dump (iconv) to UTF-8")
    return "utf-8" if codec == "utf-8-sig" else codec


def _head_bytes(sc, path: str, size: int = 4096) -> bytes:
    """The first ``size`` decompressed bytes of the first file ``path`` names, read by the driver's Hadoop.

    Hadoop rather than Python so that ``hdfs://`` and ``s3a://`` paths, and every codec
    Spark reads, work; an empty result lets Spark's own read report a missing path.
    """
    jvm = sc._jvm
    conf = sc._jsc.hadoopConfiguration()
    pattern = jvm.org.apache.hadoop.fs.Path(path)
    fs = pattern.getFileSystem(conf)
    files = [status.getPath() for status in (fs.globStatus(pattern) or []) if status.isFile()]
    if not files:
        return b""
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(files[0])
    stream = fs.open(files[0])
    try:
        if codec is not None:
            stream = codec.createInputStream(stream)
        return bytes(stream.readNBytes(size))
    finally:
        stream.close()


def _page_records(spark, path: str, encoding: str, partitions: int | None):
    """An RDD of raw byte records, each ending before a ``</page>`` (in the dump's encoding).

    Spark SQL's text source rather than ``newAPIHadoopFile``: its string column keeps
    the bytes as read, and a cast to binary hands them to Python undecoded, while
    Hadoop's ``Text`` reaches Python decoded as UTF-8 with every byte that is not UTF-8
    replaced by U+FFFD.  The separator is given as the string whose UTF-8 bytes are
    ``</page>`` in the dump's encoding (NUL-padded for UTF-16).
    """
    from pyspark.sql import functions as F

    separator = "</page>".encode(encoding).decode("utf-8")
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    saved = {key: spark.conf.get(key, None) for key in keys}
    size = 0
    if partitions:
        try:
            size = os.path.getsize(path)
        except OSError:  # not a local path (hdfs://, s3a://): let Spark choose the splits
            size = 0
    try:
        if size:
            # the splits are fixed when the plan becomes an RDD, so the session setting is needed only here
            spark.conf.set(keys[0], str(max(1 << 16, size // partitions + 1)))
            spark.conf.set(keys[1], "0")
        frame = spark.read.text(path, lineSep=separator)
        return frame.select(F.col("value").cast("binary")).rdd.map(lambda row: bytes(row[0]))
    finally:
        if size:
            for key, value in saved.items():
                spark.conf.unset(key) if value is None else spark.conf.set(key, value)


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
    """Turns one ``...</page>`` byte record into an article or a reason; pickles as configuration."""

    def __init__(self, names: dict, min_tokens: int, token_min_len: int, token_max_len: int, lower: bool,
                 encoding: str = "utf-8"):
        self.names = names
        self.min_tokens = min_tokens
        self.token_min_len = token_min_len
        self.token_max_len = token_max_len
        self.lower = lower
        self.encoding = encoding
        self._patterns = None
        self._prefixes = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_patterns"] = state["_prefixes"] = None
        return state

    def clean(self, text: str) -> str:
        if self._patterns is None:
            self._patterns = _link_patterns(self.names)
        category, files = self._patterns
        text = category.sub("", text)
        text = files.sub(_file_caption, text)
        return wikicorpus.filter_wiki(text)

    def namespace(self, page, title: str) -> str:
        ns = page.findtext("ns")
        if ns is not None:
            return ns.strip()
        # schemas before export-0.5 have no <ns>: the title's prefix names it, as MediaWiki itself decides
        if self._prefixes is None:
            self._prefixes = {name.replace("_", " ").casefold(): key
                              for key, names in self.names.items() if key != 0 for name in names}
        prefix, colon, _ = title.partition(":")
        return str(self._prefixes.get(prefix.strip().replace("_", " ").casefold(), 0)) if colon else "0"

    def classify(self, record: bytes):
        """``(None, (title, tokens))`` for an article, ``(reason, None)`` for a dropped page, ``("", None)`` for no page."""
        # undecodable bytes become U+FFFD, which no token contains: one bad byte does not cost an article
        text = record.decode(self.encoding, "replace") if isinstance(record, bytes) else record
        start = text.rfind("<page>")
        if start < 0:
            return "", None  # the tail after the last page
        try:
            page = ET.fromstring(text[start:] + "</page>")
        except ET.ParseError:
            log.warning("skipping a page that is not well-formed XML (%.60r)", text[start:start + 200])
            return "unparsable", None
        title = page.findtext("title") or ""
        if self.namespace(page, title) != "0":
            return "namespace", None
        if page.find("redirect") is not None:
            return "redirect", None
        tokens = wikicorpus.tokenize(self.clean(page.findtext("revision/text") or ""),
                                     self.token_min_len, self.token_max_len, self.lower)
        if len(tokens) < self.min_tokens:
            return "too short", None
        return None, (title, tokens)

    def __call__(self, record):
        return self.classify(record)[1]

    def reason(self, record) -> str:
        return self.classify(record)[0]


def dump_statistics(records, parser: _PageParser) -> dict:
    """``{"pages": n, "articles": n, reason: n, ...}`` over the byte records of a dump (one Spark job)."""
    counts = dict(records.map(parser.reason).countByValue())
    counts.pop("", None)
    result = {"pages": sum(counts.values()), "articles": counts.pop(None, 0)}
    result.update({reason: counts.get(reason, 0) for reason in DROP_REASONS})
    return result


def _no_article_message(path: str, counts: dict, min_tokens: int, encoding: str) -> str:
    if not counts["pages"]:
        return (f"no article in {path}: 0 pages seen (no <page>…</page> element when read as {encoding}); "
                "is it a MediaWiki XML export (*-pages-articles*.xml[.bz2])?")
    dropped = ", ".join(f"{counts[reason]} {_REASON_WORDS[reason].format(min_tokens=min_tokens)}"
                        + ("s" if reason == "redirect" and counts[reason] != 1 else "") for reason in DROP_REASONS)
    hint = "; pass a lower min_tokens to keep short pages" if counts["too short"] else ""
    return f"no article in {path}: {counts['pages']} pages seen, all dropped: {dropped}{hint}"


def _spark_session(spark):
    from pyspark.sql import SparkSession

    return spark if isinstance(spark, SparkSession) else SparkSession.builder.getOrCreate()


def read_dump(spark, path: str, *, partitions: int | None = None, min_tokens: int = wikicorpus.ARTICLE_MIN_WORDS,
              token_min_len: int = wikicorpus.TOKEN_MIN_LEN, token_max_len: int = wikicorpus.TOKEN_MAX_LEN,
              lower: bool = True):
    """An RDD of ``(title, tokens)``, one per article of the MediaWiki dump at ``path``.

    Parameters:
        spark: a SparkSession or SparkContext.
        path: the dump, on a path every executor can read (local file in local mode,
            HDFS / S3 / a shared mount on a cluster).
        partitions: about this many input splits (local files only); by default
            Spark's split size decides.
        min_tokens: drop shorter articles (gensim's ``ARTICLE_MIN_WORDS``).
        token_min_len, token_max_len, lower: as :func:`gensim.corpora.wikicorpus.tokenize`.

    Raises :class:`~deepdist.errors.CorpusError` when no page is an article, with the
    number of pages seen and of pages dropped for each reason (:data:`DROP_REASONS`):
    this costs one small job reading up to the first article.
    """
    from ..errors import CorpusError

    sc = _spark_context(spark)
    encoding = sniff_encoding(_head_bytes(sc, path))
    records = _page_records(_spark_session(spark), path, encoding, partitions)
    first = records.take(1)  # the siteinfo and the first page, read by one task
    head = first[0].decode(encoding, "replace") if first else ""
    names = namespace_names(head[: head.find("</siteinfo>") + 1] if "</siteinfo>" in head else "")
    parser = _PageParser(names, min_tokens, token_min_len, token_max_len, lower, encoding)
    articles = records.map(parser).filter(lambda article: article is not None)
    # the first count downstream would be a vocabulary with no word in it: say here what the pages were
    if not articles.take(1):
        counts = dump_statistics(records, parser)
        raise CorpusError(_no_article_message(path, counts, min_tokens, encoding), counts)
    return articles


# -- plain text --------------------------------------------------------------------------------
def read_text(spark, path: str, *, partitions: int | None = None, min_tokens: int = wikicorpus.ARTICLE_MIN_WORDS,
              token_min_len: int = wikicorpus.TOKEN_MIN_LEN, token_max_len: int = wikicorpus.TOKEN_MAX_LEN,
              lower: bool = True):
    """An RDD of ``(key, tokens)`` from text files with one article per line.

    ``path`` is a directory, a file or a glob that Spark can read.  The key is the
    line's first 100 characters (articles have no title here); it only serves to
    split off held-out articles deterministically.  Raises :class:`~deepdist.errors.CorpusError`
    when no line has ``min_tokens`` tokens.
    """
    sc = _spark_context(spark)
    lines = sc.textFile(path, minPartitions=partitions) if partitions else sc.textFile(path)

    def tokenize(line):
        tokens = wikicorpus.tokenize(line, token_min_len, token_max_len, lower)
        return (line[:100], tokens) if len(tokens) >= min_tokens else None

    articles = lines.map(tokenize).filter(lambda article: article is not None)
    if not articles.take(1):
        from ..errors import CorpusError

        counts = {"lines": lines.count()}
        raise CorpusError(f"no article in {path}: {counts['lines']} lines seen, all shorter than {min_tokens} "
                          "tokens" + ("; pass a lower min_tokens to keep them" if counts["lines"] else ""), counts)
    return articles


def read_articles(spark, path: str, *, max_articles: int | None = None, **options):
    """Articles ``(title, tokens)`` from a dump (:func:`read_dump`) or a text directory (:func:`read_text`).

    ``max_articles`` keeps only the first that many articles (in input order), for
    quick runs; it costs one extra pass to number them.
    """
    from ..session import spark_context
    from ..executors import ensure_executors

    check_int("max_articles", max_articles, none=True)
    ensure_executors(spark_context(spark))  # parsing runs deepdist's code on the executors
    articles = (read_dump if is_dump(path) else read_text)(spark, path, **options)
    if max_articles is not None:
        articles = (articles.zipWithIndex().filter(lambda pair: pair[1] < max_articles)
                    .map(lambda pair: pair[0]))
    return articles


# -- splitting ---------------------------------------------------------------------------------
def is_heldout(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether the article ``key`` is held out: a stable hash, the same in every process."""
    return (zlib.crc32(f"{seed}:{key}".encode("utf-8")) % 10_000) < fraction * 10_000


def split_heldout(articles, fraction: float = 0.1, seed: int = 0):
    """``(train, heldout)`` RDDs of articles; about ``fraction`` of the articles are held out."""
    check_real("fraction", fraction, minimum=0, below=1)
    train = articles.filter(lambda article: not is_heldout(article[0], fraction, seed))
    heldout = articles.filter(lambda article: is_heldout(article[0], fraction, seed))
    return train, heldout


def sentences(articles, max_length: int = 10_000):
    """Token lists of at most ``max_length`` tokens (gensim's ``MAX_WORDS_IN_BATCH``) from articles."""
    check_int("max_length", max_length)

    def chunks(article):
        tokens = article[1]
        return [tokens[i:i + max_length] for i in range(0, len(tokens), max_length)]

    return articles.flatMap(chunks)
