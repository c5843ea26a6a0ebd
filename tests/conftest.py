import logging

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
