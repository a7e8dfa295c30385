"""A store on a ragstore server, with the embedded store's interface, over HTTP."""

from ragstore.client.aio import AsyncRemoteCollection, AsyncRemoteStore
from ragstore.client.sync import RemoteCollection, RemoteStore
from ragstore.client.transport import DEFAULT_TENANT

__all__ = [
    "DEFAULT_TENANT",
    "AsyncRemoteCollection",
    "AsyncRemoteStore",
    "RemoteCollection",
    "RemoteStore",
]
