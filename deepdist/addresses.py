"""Where a model server listens and the address executors call it at."""

from __future__ import annotations

import ipaddress

from .errors import ConfigurationError

__all__ = ["LOOPBACK", "driver_addresses", "is_loopback", "is_wildcard"]

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Does ``host`` name the local host's loopback interface only?"""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """Does ``host`` mean every interface?"""
    return host in ("", "0.0.0.0", "::", "[::]")


def driver_addresses(sc, host: str | None = None) -> tuple[str, str]:
    """``(bind, advertise)``: where to listen, and the address executors should call.

    In local mode both are loopback.  On a cluster we bind where Spark binds the
    driver (``spark.driver.bindAddress``, else ``spark.driver.host``) and
    advertise ``spark.driver.host``, the address executors already use.
    """
    if host is not None:
        return host, host
    if sc.master.startswith("local"):
        return LOOPBACK, LOOPBACK
    conf = sc.getConf()
    advertise = conf.get("spark.driver.host", None)
    if not advertise:
        raise ConfigurationError("spark.driver.host is not set; set it to an address executors can reach")
    return conf.get("spark.driver.bindAddress", None) or advertise, advertise
