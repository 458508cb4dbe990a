"""The Wikipedia reader against gensim's own reader, on dumps in several encodings and schemas."""

import bz2
import importlib.util
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from gensim.corpora.wikicorpus import WikiCorpus
from gensim.test.utils import datapath

from deepdist.errors import ConfigurationError, CorpusError
from deepdist.datasets.wikipedia import read_articles, read_dump, sentences, sniff_encoding, split_heldout

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")

#: words each encoding can write; every article mixes them with ASCII words and wiki markup
WORDS = {
    "latin": "café naïve façade über straße größe señor niño año déjà élan",
    "cyrillic": "москва россия язык история город страна война время жизнь",
    "any": "café москва 東京都 ελλάδα straße 中華人民 ἀρχή",
}


def article(n: int, words: str) -> str:
    """An article of well over 50 tokens, with the markup filter_wiki removes or keeps."""
    body = " ".join(f"{w} plain{chr(97 + (i + n) % 26)}word" for i, w in enumerate(words.split() * 4))
    return (f"{{{{Infobox thing|name=Thing {n}}}}}\n'''Thing {n}''' is a [[Target|shown link]] &amp; more. "
            f"{body}\n[[File:Picture{n}.jpg|thumb|a caption kept here]]\n== Section ==\n{body}\n"
            f"<ref>a reference</ref>\n[[Category:Things]]")


def page(title: str, text: str, *, ns: int | None = 0, redirect: str | None = None, pid: int = 1) -> str:
    ns_element = f"<ns>{ns}</ns>" if ns is not None else ""
    redirect_element = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    {ns_element}\n    <id>{pid}</id>\n"
            f"    {redirect_element}\n    <revision>\n      <id>{pid + 1000}</id>\n"
            f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n')


def dump_xml(pages, *, encoding_name: str | None, schema: str = "0.10") -> str:
    declaration = f'<?xml version="1.0" encoding="{encoding_name}"?>\n' if encoding_name else ""
    return (f'{declaration}<mediawiki xmlns="http://www.mediawiki.org/xml/export-{schema}/" '
            f'version="{schema}" xml:lang="en">\n  <siteinfo>\n    <sitename>Test</sitename>\n    <namespaces>\n'
            '      <namespace key="0" case="first-letter" />\n'
            '      <namespace key="1" case="first-letter">Talk</namespace>\n'
            '      <namespace key="6" case="first-letter">File</namespace>\n'
            '      <namespace key="14" case="first-letter">Category</namespace>\n'
            "    </namespaces>\n  </siteinfo>\n" + "".join(pages) + "</mediawiki>\n")


def write(path: Path, xml: str, codec: str) -> Path:
    data = xml.encode(codec)
    path.write_bytes(bz2.compress(data) if path.suffix == ".bz2" else data)
    return path


def mixed_pages(words: str, articles: int = 3):
    pages = [page(f"Article {i} {words.split()[i % len(words.split())]}", article(i, words), pid=10 * i)
             for i in range(articles)]
    return pages + [
        page("Old name", "#REDIRECT [[Article 0]]", redirect="Article 0", pid=1001),
        page("Talk:Article 0", article(99, words), ns=1, pid=1002),
        page("Stub", f"A stub about {words}.", pid=1003),
    ]


def gensim_articles(xml: str, codec: str, tmp_path: Path) -> dict:
    """``{title: tokens}`` from gensim's WikiCorpus, which reads only .bz2, on the same XML bytes."""
    reference = write(tmp_path / "reference.xml.bz2", xml, codec)
    corpus = WikiCorpus(str(reference), dictionary={}, metadata=True, processes=1)
    return {title: tokens for tokens, (_, title) in corpus.get_texts()}


CASES = [
    # (declared encoding, Python codec writing the bytes, schema, words, file name, pages)
    ("UTF-8", "utf-8", "0.10", "any", "dump.xml.bz2", 3),
    ("ISO-8859-1", "latin-1", "0.11", "latin", "dump.xml.bz2", 3),
    ("ISO-8859-1", "latin-1", "0.11", "latin", "dump.xml", 3),
    ("windows-1251", "cp1251", "0.10", "cyrillic", "dump.xml", 3),
    ("KOI8-R", "koi8-r", "0.8", "cyrillic", "dump.xml.bz2", 3),
    ("UTF-16", "utf-16", "0.11", "any", "dump.xml.bz2", 3),  # Python writes a byte-order mark
    # no byte-order mark, and enough pages that the reader's three splits start mid-file
    ("UTF-16BE", "utf-16-be", "0.5", "any", "dump.xml", 400),
    (None, "utf-8", "0.3", "any", "dump.xml", 3),  # no declaration: UTF-8
]


@pytest.mark.parametrize("declared, codec, schema, words, name, count", CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[4]}" for c in CASES])
def test_reads_what_gensim_reads(spark, tmp_path, declared, codec, schema, words, name, count):
    xml = dump_xml(mixed_pages(WORDS[words], count), encoding_name=declared, schema=schema)
    path = write(tmp_path / name, xml, codec)
    expected = gensim_articles(xml, codec, tmp_path)
    assert len(expected) == count  # the redirect, the talk page and the stub are dropped by gensim too

    got = read_articles(spark, str(path), partitions=3).collect()

    assert len(got) == len(expected)
    assert dict(got) == expected
    # the words outside ASCII came through decoded, not as replacement characters
    assert any(word in tokens for tokens in expected.values() for word in WORDS[words].split()[:2])
    assert not any("\ufffd" in token for _, tokens in got for token in tokens)


def test_shipped_dump_reads_as_before(spark):
    articles = read_articles(spark, SHIPPED).collect()
    # the numbers this reader (and gensim's WikiCorpus) gave before dumps were read as bytes
    assert len(articles) == 106
    assert sum(len(tokens) for _, tokens in articles) == 452_944
    assert articles[0][0] == "Anarchism"


def test_all_redirect_dump_says_so(spark, tmp_path):
    pages = [page(f"Old {i}", f"#REDIRECT [[Target {i}]]", redirect=f"Target {i}", pid=i) for i in range(4)]
    path = write(tmp_path / "redirects.xml.bz2", dump_xml(pages, encoding_name="UTF-8"), "utf-8")

    with pytest.raises(CorpusError) as caught:
        read_articles(spark, str(path))

    message = str(caught.value)
    assert "4 pages seen" in message and "4 redirects" in message and "min_count" not in message
    assert caught.value.counts == {"pages": 4, "articles": 0, "redirect": 4, "namespace": 0, "too short": 0,
                                   "unparsable": 0}


def test_every_reason_is_counted(spark, tmp_path):
    # schema 0.3 has no <ns>: the namespace comes from the title prefix the siteinfo declares
    pages = [page("Talk:Something", article(1, WORDS["latin"]), ns=None, pid=1),
             page("Category:Things", article(2, WORDS["latin"]), ns=None, pid=2),
             page("Old", "#REDIRECT [[New]]", ns=None, redirect="New", pid=3),
             page("Stub", "Too short to keep.", ns=None, pid=4),
             page("Stub two", "Also too short.", ns=None, pid=5),
             page("Broken", "an unescaped & breaks the XML " + article(3, WORDS["latin"]), ns=None, pid=6)]
    xml = dump_xml(pages, encoding_name="ISO-8859-1", schema="0.3")
    path = write(tmp_path / "dropped.xml", xml, "latin-1")

    with pytest.raises(CorpusError) as caught:
        read_dump(spark, str(path))

    message = str(caught.value)
    assert "6 pages seen" in message
    for part in ("1 not well-formed XML", "2 outside the main namespace", "1 redirect,",
                 "2 shorter than 50 tokens", "lower min_tokens"):
        assert part in message, message
    # the same pages with a lower bar: the stubs become articles
    assert {title for title, _ in read_dump(spark, str(path), min_tokens=2).collect()} == {"Stub", "Stub two"}


def test_dump_without_pages(spark, tmp_path):
    path = write(tmp_path / "empty.xml.bz2", dump_xml([], encoding_name="UTF-16"), "utf-16")
    with pytest.raises(CorpusError, match="0 pages seen"):
        read_articles(spark, str(path))


def test_text_files_without_articles(spark, tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "part-0.txt").write_text("a short line\nanother short line\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="2 lines seen, all shorter than 50 tokens"):
        read_articles(spark, str(tmp_path / "texts"))


def test_the_example_reports_an_empty_dump(spark, tmp_path):
    pages = [page("Old", "#REDIRECT [[New]]", redirect="New")]
    path = write(tmp_path / "redirect.xml.bz2", dump_xml(pages, encoding_name="UTF-8"), "utf-8")
    spec = importlib.util.spec_from_file_location("word2vec_wikipedia", ROOT / "examples" / "word2vec_wikipedia.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    with pytest.raises(CorpusError, match="1 pages seen, all dropped: .*1 redirect,"):
        example.main(["--dump", str(path), "--quiet", "--output", str(tmp_path / "out")])


@pytest.mark.parametrize("head, codec", [
    (b'<?xml version="1.0" encoding="UTF-8"?>\n<mediawiki', "utf-8"),
    (b"\xef\xbb\xbf<?xml version='1.0'?><mediawiki", "utf-8"),
    (b'<?xml version="1.0" encoding="iso-8859-1"?>', "iso8859-1"),
    (b'<?xml version="1.0" encoding="windows-1252" standalone="yes"?>', "cp1252"),
    ('<?xml version="1.0" encoding="UTF-16"?>'.encode("utf-16"), "utf-16-le"),
    ('<?xml version="1.0" encoding="UTF-16"?>'.encode("utf-16-be"), "utf-16-be"),
    (b"<mediawiki xmlns=", "utf-8"),
    (b"", "utf-8"),
])
def test_sniff_encoding(head, codec):
    assert sniff_encoding(head) == codec


@pytest.mark.parametrize("head, cause", [(b'<?xml version="1.0" encoding="x-no-such-thing"?>', LookupError),
                                         (b'<?xml version="1.0" encoding="UTF-16"?>', type(None))])
def test_sniff_encoding_refuses(head, cause):
    with pytest.raises(CorpusError, match="encoding") as caught:
        sniff_encoding(head)
    assert isinstance(caught.value.__cause__, cause)   # Python's own word on the codec stays in the chain


def test_bad_parameters_are_refused_by_name(spark):
    articles = spark.sparkContext.parallelize([("A", ["a", "b", "c"])])
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigurationError, match=f"max_articles must be None or an integer >= 1, got {bad!r}"):
            read_articles(spark, SHIPPED, max_articles=bad)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ConfigurationError, match="fraction"):
            split_heldout(articles, fraction=bad)
    for bad in (0, True):
        with pytest.raises(ConfigurationError, match="max_length"):
            sentences(articles, max_length=bad)
    assert sentences(articles, max_length=2).collect() == [["a", "b"], ["c"]]
