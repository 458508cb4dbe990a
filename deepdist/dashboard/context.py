"""The dashboard's methods of a :class:`~deepdist.DeepDist` context (mixed into it)."""

from __future__ import annotations

import html

from ..errors import ConfigurationError

__all__ = ["DashboardMethods"]


class DashboardMethods:
    """``dashboard_url``, ``history``, ``save_report`` and the Jupyter view of a context that
    holds its :class:`~deepdist.dashboard.Dashboard` in ``_dashboard`` (None: no dashboard)
    and its running server in ``_server``."""

    def _require_dashboard(self):
        if self._dashboard is None:
            raise ConfigurationError("no dashboard: open the context (with DeepDist(...) as dd:) with dashboard=True")
        return self._dashboard

    def dashboard_url(self) -> str:
        """The live dashboard's address with a fresh one-time login token."""
        self._require_open()
        return self._require_dashboard().url()

    def history(self) -> dict:
        """The dashboard's data: metric history, status, partitions, parameters (JSON-able)."""
        return self._require_dashboard().data()

    def save_report(self, path: str) -> tuple[str, str]:
        """Write the dashboard as a self-contained HTML report to ``path`` (it opens offline),
        and its metric history as JSON beside it; return both paths. Works during and after
        training.

        Example::

            >>> with DeepDist(model) as dd:                 # doctest: +SKIP
            ...     dd.train(rdd, gradient, descent)
            >>> dd.save_report("out/report.html")           # doctest: +SKIP
            ('out/report.html', 'out/report.json')
        """
        return self._require_dashboard().save_report(path)

    def _repr_html_(self) -> str | None:
        """In Jupyter: the live dashboard inline while the server runs, else the report."""
        if self._dashboard is None:
            return None
        if self._server is not None:
            url = html.escape(self.dashboard_url(), quote=True)
            return (f'<iframe src="{url}" width="100%" height="720" style="border:0"></iframe>'
                    f'<div><a href="{html.escape(self.dashboard_url(), quote=True)}" target="_blank" '
                    'rel="noopener noreferrer">open the dashboard in a new tab</a> (the frame needs the notebook '
                    'on the same host name as the driver: browsers keep a strict cookie out of other sites\' '
                    'frames)</div>')
        report = html.escape(self._dashboard.report(), quote=True)
        return f'<iframe srcdoc="{report}" width="100%" height="720" style="border:0"></iframe>'
