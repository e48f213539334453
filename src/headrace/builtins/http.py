"""Built-in HTTP plugins (imported only by pipelines that use one: aiohttp is not free)."""

from ._http._download import DownloadSink, DownloadStep
from ._http._sink import HttpSink
from ._http._source import HttpSource
from ._http._step import HttpStep
from ._http._urls import UrlsSource

__all__ = ["DownloadSink", "DownloadStep", "HttpSink", "HttpSource", "HttpStep", "UrlsSource"]
