import logging
import socket

import pytest
from mmengine.logging import MMLogger


@pytest.fixture
def mmlogger_records():
    """Records of what goes through mmengine's current logger."""
    records = []

    class Collect(logging.Handler):

        def emit(self, record):
            records.append(record)

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def free_port():
    """A TCP port on the loopback that nothing listens on now (for the
    rendezvous of multi-process tests; a fixed one fails wherever it is
    taken, e.g. by a second test run on the same machine)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
