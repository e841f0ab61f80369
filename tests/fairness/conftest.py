import pytest

from trustml.threads import limit_threads


@pytest.fixture(scope="module")
def one_thread():
    """Tiny language models: on a shared CPU, thread hand-offs cost more than the arithmetic."""
    with limit_threads(1):
        yield
