"""Work around lost wake-ups when nbclient waits for kernel messages (jupyter/nbclient#312).

With pyzmq 27, ``zmq.asyncio`` polling without a timeout can miss its wake-up, so papermill or myst-nb
wait forever for a reply the kernel has already sent (seen here in cells that display ipywidgets). We
wait in 0.5 s slices instead; the overall timeout, if any, is unchanged. ``install()`` is idempotent.
Used by the book build (trustml_site extension) and the tests' notebook runner (tools/site.py).
"""

from __future__ import annotations

from queue import Empty
from time import monotonic


def install() -> None:
    from jupyter_client.channels import AsyncZMQSocketChannel

    if getattr(AsyncZMQSocketChannel.get_msg, "_polls_in_slices", False):
        return
    original = AsyncZMQSocketChannel.get_msg

    async def get_msg_in_slices(self, timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - monotonic()))
            try:
                return await original(self, timeout=step)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    get_msg_in_slices._polls_in_slices = True
    AsyncZMQSocketChannel.get_msg = get_msg_in_slices
