"""Readers of data sets into Spark RDDs (:mod:`.wikipedia`: MediaWiki XML dumps)."""
